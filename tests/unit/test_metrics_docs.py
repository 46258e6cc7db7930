"""docs/operations.md names every metric the driver serves, with its labels and reasons."""

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from felix_p4 import metrics

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
SERVED = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]


def test_every_metric_has_a_row_with_its_labels():
    for metric in SERVED:
        name = metric._name + ("_total" if metric._type == "counter" else "")
        row = re.search(rf"^\| `{name}` \|([^|]*)\|", DOC, re.MULTILINE)
        assert row is not None, name
        documented = re.findall(r"`(\w+)`(?: \()?", row.group(1))
        assert [label for label in documented if label in metric._labelnames] == list(
            metric._labelnames
        ), name


def test_every_admission_reason_is_explained():
    section = DOC[DOC.index("The `reason` of `felix_p4_admissions_total`") :]
    for reason in metrics.REASONS:
        assert f"`{reason}`" in section, reason
