"""Data and model: scikit-learn's handwritten digits (1797 8x8 images, shipped with
scikit-learn, no download), split into equal partitions; logistic regression."""

import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

NUM_CLASSES = 10
NUM_FEATURES = 64


def load_data(partition_id: int, num_partitions: int):
    """The partition's train and test split; the same for every runtime."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    order = np.random.default_rng(0).permutation(len(y))
    part = np.array_split(order, num_partitions)[partition_id]
    return train_test_split(X[part], y[part], test_size=0.2, random_state=42)


def get_model(penalty: str, local_epochs: int) -> LogisticRegression:
    model = LogisticRegression(penalty=penalty, max_iter=local_epochs, warm_start=True)
    set_initial_params(model)
    return model


def set_initial_params(model: LogisticRegression) -> None:
    model.classes_ = np.arange(NUM_CLASSES)
    model.coef_ = np.zeros((NUM_CLASSES, NUM_FEATURES))
    model.intercept_ = np.zeros((NUM_CLASSES,))


def get_model_params(model: LogisticRegression):
    return [model.coef_, model.intercept_]


def set_model_params(model: LogisticRegression, params) -> None:
    model.coef_ = params[0]
    model.intercept_ = params[1]


def fit(model, X, y) -> None:
    with warnings.catch_warnings():
        # Few local iterations per round by design: convergence comes over the rounds.
        warnings.simplefilter("ignore")
        model.fit(X, y)


def evaluate(model, X, y):
    proba = model.predict_proba(X)
    return log_loss(y, proba, labels=list(range(NUM_CLASSES))), accuracy_score(y, model.predict(X))
