"""`python -m keras_aim.convert SOURCE --output FOLDER ...`"""

import sys

from keras_aim.convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
