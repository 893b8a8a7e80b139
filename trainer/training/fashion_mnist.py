"""What the data set is: its TFDS name, sizes, image shape and class names (no TensorFlow needed to read them)."""

DATASET = "fashion_mnist"
TRAIN_SIZE = 60000
TEST_SIZE = 10000
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
