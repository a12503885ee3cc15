"""Parses a Prometheus exposition from stdin with prometheus_client's own
parsers (OpenMetrics when it ends in `# EOF`, the classic text format
otherwise) and prints the families as JSON:
{"family": {"type": "counter", "samples": [[name, {labels}, value], ...]}}.
A text the parser refuses exits non-zero with the parser's message."""

import json
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

text = sys.stdin.read()
parse = openmetrics_families if text.rstrip().endswith("# EOF") else text_families
families = {}
try:
    for family in parse(text):
        families[family.name] = {
            "type": family.type,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }
except Exception as e:  # the parser's own words, for the test's message
    print(f"not a valid exposition: {e}", file=sys.stderr)
    sys.exit(1)
json.dump(families, sys.stdout)
