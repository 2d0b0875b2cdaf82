"""Flex Template entry file (FLEX_TEMPLATE_PYTHON_PY_FILE): hands the launcher's arguments to wirestream."""

import sys

from pipelines.flex_template import main

if __name__ == "__main__":
  sys.exit(main())
