"""Write a small pytest project into the folder given (default: ./proj).

Ten quick tests, two slow ones, one that fails on every run whose seed is odd
(AQE_DEMO_SEED) - enough history for prioritisation and subsetting examples.
"""

import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "proj")
(root / "tests").mkdir(parents=True, exist_ok=True)
(root / "pytest.ini").write_text(
    "[pytest]\ntestpaths = tests\naddopts = -p no:randomly -p no:cacheprovider\n"
)
(root / "tests" / "test_fast.py").write_text(
    "import pytest\n\n\n"
    "@pytest.mark.parametrize('n', range(10))\n"
    "def test_square(n):\n    assert n * n >= 0\n"
)
(root / "tests" / "test_slow.py").write_text(
    "import os\nimport time\n\n\n"
    "def test_report_export():\n    time.sleep(0.3)\n\n\n"
    "def test_big_upload():\n    time.sleep(0.2)\n\n\n"
    "def test_checkout_total():\n"
    "    assert int(os.environ.get('AQE_DEMO_SEED', '0')) % 2 == 0, 'rounding error'\n"
)
print(f"wrote {root}/ (13 tests)")
