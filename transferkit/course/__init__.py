"""Layer 5, the course: figures, controls, self-checks, student versions, the learner's
workspace, the environment report, magics and the command line."""
