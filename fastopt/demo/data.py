"""The data sets of `fastopt compare`, read from local files only (never downloaded).

- load_digits_dataset(): scikit-learn's 8x8 handwritten digits (1797 images, shipped inside
  scikit-learn), split deterministically into 1438 training and 359 test images.
- load_mnist(directory): MNIST from the four standard IDX files a user already has, raw or
  gzip-compressed.

Both return a Dataset whose images stay as integer pixel values; Dataset.features() scales a
selection of them to [0, 1] in the dtype asked for, so a 60000-image MNIST is not held in
float64.
"""
import dataclasses
import gzip
import os

import numpy as np

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # the split is fixed, whatever --seed says, so test sets are comparable

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, columns)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)
MNIST_FILES = {  # role: standard file name
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
GZIP_SIGNATURE = b"\x1f\x8b"


class DatasetError(ValueError):
    """A data set file exists but is not what was expected; the message names the file and
    what was expected (magic number, size, matching counts)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images as integer pixel values, one flattened image per row, and integer labels.

    name: shown in output. train_images, test_images: (n, features) arrays of pixel values
    from 0 to pixel_max. train_labels, test_labels: (n,) int64 class indices from 0.
    classes: the number of classes.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    pixel_max: float
    classes: int

    @property
    def features(self):
        """Features per image (64 for the digits, 784 for MNIST)."""
        return self.train_images.shape[1]

    def scaled(self, images, dtype=np.float64):
        """images (some rows of train_images or test_images) as dtype, scaled to [0, 1]."""
        dtype = np.dtype(dtype)
        return images.astype(dtype) / dtype.type(self.pixel_max)


def load_digits_dataset():
    """scikit-learn's handwritten digits (8x8 pixels of 0..16, 10 classes, shipped with
    scikit-learn: no download), 80 % for training and 20 % for testing, split by a fixed
    permutation. Needs scikit-learn."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.data.astype(np.uint8)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    test_count = round(len(labels) * DIGITS_TEST_FRACTION)
    test, train = order[:test_count], order[test_count:]
    return Dataset("scikit-learn digits (8x8)", images[train], labels[train], images[test],
                   labels[test], pixel_max=16.0, classes=10)


def read_idx(path, expected_magic):
    """Read an IDX file of unsigned bytes (MNIST's format), raw or gzip-compressed (detected
    from its first bytes), and return its contents as a uint8 array shaped as the header says.

    expected_magic: IDX_IMAGES_MAGIC (2051) or IDX_LABELS_MAGIC (2049). Raises
    FileNotFoundError if path does not exist and DatasetError if the file is not a complete
    IDX file with that magic number (wrong magic, truncated, trailing bytes, bad gzip).
    """
    path = os.fspath(path)
    with open(path, "rb") as raw_file:
        content = raw_file.read()
    if content[:2] == GZIP_SIGNATURE:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError) as error:
            raise DatasetError(f"{path}: not a valid gzip file ({error})") from None
    if len(content) < 4:
        raise DatasetError(f"{path}: {len(content)} bytes is too short for an IDX file; "
                           f"expected the magic number {expected_magic:#010x} "
                           f"({expected_magic}) first")
    magic = int.from_bytes(content[:4], "big")
    if magic != expected_magic:
        raise DatasetError(f"{path}: magic number {magic:#010x} ({magic}), expected "
                           f"{expected_magic:#010x} ({expected_magic}); is this the right "
                           f"MNIST IDX file?")
    dimensions = expected_magic & 0xFF
    header_size = 4 + 4 * dimensions
    if len(content) < header_size:
        raise DatasetError(f"{path}: {len(content)} bytes is too short for the header of an "
                           f"IDX file of {dimensions} dimensions; expected {header_size} bytes")
    shape = tuple(int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big")
                  for i in range(dimensions))
    expected_size = header_size + int(np.prod(shape))
    if len(content) != expected_size:
        problem = "truncated" if len(content) < expected_size else "too long"
        raise DatasetError(f"{path}: {len(content)} bytes (uncompressed), expected "
                           f"{expected_size} for a header and data of shape {shape}; "
                           f"the file is {problem}")
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def find_mnist_file(directory, name):
    """The path of MNIST file name in directory: name or name + ".gz", also accepting the
    common "train-images.idx3-ubyte" spelling. Raises FileNotFoundError naming what was
    looked for."""
    spellings = [name, name.replace("-idx", ".idx")]
    candidates = [os.path.join(directory, spelling + suffix)
                  for spelling in dict.fromkeys(spellings) for suffix in ("", ".gz")]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"MNIST file {name} (or {name}.gz) not found in {directory}; "
                            f"expected the four IDX files {', '.join(MNIST_FILES.values())}")


def load_mnist(directory):
    """MNIST (or any data set in its format) from the four IDX files in directory (see
    MNIST_FILES; raw or .gz): 28x28 pixels of 0..255, 10 classes. Raises FileNotFoundError if
    the directory or a file is missing and DatasetError if a file is malformed or the counts
    of images and labels differ."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"MNIST directory {directory} does not exist; expected a folder "
                                f"with the IDX files {', '.join(MNIST_FILES.values())}")
    arrays = {}
    for role, name in MNIST_FILES.items():
        path = find_mnist_file(directory, name)
        magic = IDX_IMAGES_MAGIC if role.endswith("images") else IDX_LABELS_MAGIC
        arrays[role] = (path, read_idx(path, magic))
    for split in ("train", "test"):
        (images_path, images), (labels_path, labels) = (arrays[f"{split}_images"],
                                                        arrays[f"{split}_labels"])
        if len(labels) == 0:
            raise DatasetError(f"{labels_path} holds no labels; expected at least one "
                               f"{split}ing image")
        if len(images) != len(labels):
            raise DatasetError(f"{images_path} has {len(images)} images but {labels_path} has "
                               f"{len(labels)} labels; expected the same count")
        if len(labels) and labels.max() > 9:
            raise DatasetError(f"{labels_path}: label {labels.max()} found, expected 0 to 9")
    return Dataset(f"MNIST ({directory})",
                   arrays["train_images"][1].reshape(len(arrays["train_images"][1]), -1),
                   arrays["train_labels"][1].astype(np.int64),
                   arrays["test_images"][1].reshape(len(arrays["test_images"][1]), -1),
                   arrays["test_labels"][1].astype(np.int64),
                   pixel_max=255.0, classes=10)
