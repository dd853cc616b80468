import pytest
import torch

from transferkit.course.checks import Result, check, fingerprint, names, register


def test_right_and_wrong_answers_with_hints():
    ok = check("00.pixels_per_image", 64)
    assert ok and isinstance(ok, Result) and str(ok).startswith("PASS ")
    wrong = check("00.pixels_per_image", 8)
    assert not wrong and "square" in wrong.message and "64" not in wrong.message


def test_numeric_answers_accept_tensors_and_floats():

    from transferkit.foundations.data import load_digits

    _, y = load_digits()
    assert check("00.count_of_threes", (y == 3).sum())
    assert check("00.count_of_threes", float((y == 3).sum()))


def test_placeholder_answer_gets_a_nudge():
    assert "no answer yet" in check("00.count_of_threes", ...).message


def test_unreadable_answer_is_a_failed_check_not_a_crash():
    result = check("00.count_of_threes", "many")
    assert not result and "could not read" in result.message


def test_string_answers_ignore_case_and_punctuation():
    assert check("00.which_step_needs_labels", "Fine tuning")
    assert not check("00.which_step_needs_labels", "pre-training")


def test_answers_are_not_stored_in_plain_text():
    import inspect

    import transferkit.course.checks as module

    source = inspect.getsource(module)
    assert fingerprint("00.which_step_needs_labels", "fine-tuning") in source
    assert "fine-tuning'" not in source.split("_UNLABELLED_STEP")[1].split("\n")[0]


def test_unknown_check_lists_the_names():
    with pytest.raises(KeyError, match="00.count_of_threes"):
        check("00.nope", 1)
    assert "00.pixels_per_image" in names()


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="exists already"):
        register("00.count_of_threes")(lambda answer: (True, ""))


def test_lesson_02_checks():
    import math

    assert check("02.cross_entropy", -math.log(0.3))
    assert check("02.cross_entropy", 1.204)  # rounded is fine
    assert "true" in check("02.cross_entropy", -math.log(0.6)).message
    assert "minus" in check("02.cross_entropy", math.log(0.3)).message
    assert check("02.steps_per_epoch", 34)  # 1077 training examples, batches of 32
    assert "smaller" in check("02.steps_per_epoch", 33).message
    assert check("02.split_for_learning_rate", "Validation")
    assert check("02.split_for_learning_rate", "val")
    assert "once" in check("02.split_for_learning_rate", "test").message
    assert not check("02.split_for_learning_rate", "train")


def test_lesson_03_checks_recompute_the_answers():
    import torch

    from transferkit.foundations.data import load_digits, train_val_test_split
    from transferkit.methods.autoencoder import Autoencoder, article_dims

    model = Autoencoder(article_dims(64))
    assert check("03.article_parameters", sum(p.numel() for p in model.parameters()))
    encoder_only = sum(p.numel() for p in model.encoder.parameters())
    assert "decoder" in check("03.article_parameters", encoder_only).message

    train, _, test = train_val_test_split(*load_digits(), seed=0)
    error = ((test.x - train.x.mean(dim=0)) ** 2).mean()
    assert check("03.mean_image_error", error) and check("03.mean_image_error", float(error) + 1e-7)
    assert "training images" in check("03.mean_image_error",
                                      ((test.x - test.x.mean(0)) ** 2).mean()).message

    rank = int(torch.linalg.matrix_rank((train.x - train.x.mean(0)).double()))
    assert check("03.pca_exact_code_size", rank)
    assert "blank" in check("03.pca_exact_code_size", 64).message
    assert not check("03.pca_exact_code_size", rank + 1)


def test_lesson_04_checks_recompute_the_answers():
    from transferkit.methods.autoencoder import article_dims
    from transferkit.methods.encoder import Encoder
    from transferkit.surgery.freezing import freeze_to
    from transferkit.surgery.heads import Classifier

    model = freeze_to(Classifier(Encoder({"kind": "mlp", "dims": list(article_dims(64))}), 10),
                      -2)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 2 * 4 + 2 + 2 * 10 + 10  # Linear(4, 2) and the head Linear(2, 10)
    assert check("04.trainable_after_freeze_to", trainable)
    assert "head alone" in check("04.trainable_after_freeze_to", 30).message

    assert check("04.discriminative_lr", 1e-3 / 2.6**7)  # 8 groups: 7 encoder layers + head
    assert "too many" in check("04.discriminative_lr", 1e-3 / 2.6**8).message
    assert "short" in check("04.discriminative_lr", 1e-3 / 2.6**6).message

    assert check("04.momentum_drift", 0.09)
    assert "zeroed, not removed" in check("04.momentum_drift", 0).message
    assert not check("04.momentum_drift", 0.1)


def test_lesson_05_checks_recompute_the_answers():
    import torch
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    for p in model.parameters():
        p.requires_grad = False
    model.fc = torch.nn.Linear(model.fc.in_features, 10)  # the articles' recipe, CIFAR-10
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert check("05.articles_recipe_trainable", trainable)
    assert "bias" in check("05.articles_recipe_trainable", trainable - 10).message
    assert "ImageNet" in check("05.articles_recipe_trainable", 2048 * 1000 + 1000).message

    bn = torch.nn.BatchNorm1d(1)  # what PyTorch does: ten batches of mean 1, in train() mode
    for _ in range(10):
        bn(torch.ones(4, 1))
    assert check("05.bn_running_mean", float(bn.running_mean))
    assert "remaining" in check("05.bn_running_mean", 1.0).message
    assert not check("05.bn_running_mean", 0.5)


def test_lesson_05_astronaut_probabilities_check():
    assert check("05.astronaut_probabilities", 1.0)
    assert check("05.astronaut_probabilities", torch.tensor(0.99999))
    assert "all 1,000" in check("05.astronaut_probabilities", 0.3).message
    assert not check("05.astronaut_probabilities", 3.0)
