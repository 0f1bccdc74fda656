import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CIFAR10 = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Statistics caches go to a temporary folder, never the user's home."""
    os.environ["IEP_CACHE_DIR"] = str(tmp_path_factory.mktemp("iep_cache"))
    yield


@pytest.fixture(scope="session")
def cifar10_dir():
    if not os.path.isdir(SHARED_CIFAR10):
        pytest.skip(f"real CIFAR-10 TFRecords not found at {SHARED_CIFAR10} (../shared/data beside the project)")
    return SHARED_CIFAR10


@pytest.fixture(scope="session")
def digits_pipeline():
    from iep.datasets import DataConfig, build_pipeline

    return build_pipeline(DataConfig("digits"))


@pytest.fixture(scope="session")
def cifar10_subset(cifar10_dir):
    """1 % of real CIFAR-10 (500 training images), decoded once per session for the methods' step tests."""
    from iep.datasets import DataConfig, build_pipeline

    return build_pipeline(DataConfig("tfrecord", cifar10_dir, rate=0.01))
