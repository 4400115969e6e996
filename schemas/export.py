"""Write one JSON Schema per event into ``schemas/jsonschema/`` (``python -m tokenbrake.schemas.export``)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenbrake.schemas.control import AlertEvent, ControlEvent
from tokenbrake.schemas.outcome import OutcomeEvent
from tokenbrake.schemas.usage import UsageEvent

OUT = Path(__file__).with_name("jsonschema")
MODELS = {"usage_event": UsageEvent, "control_event": ControlEvent, "alert_event": AlertEvent,
          "outcome_event": OutcomeEvent}


def render() -> dict[str, str]:
    return {
        f"{name}.json": json.dumps(model.model_json_schema(mode="validation"), indent=2, sort_keys=True) + "\n"
        for name, model in MODELS.items()
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for filename, text in render().items():
        (OUT / filename).write_text(text)
        print(f"wrote {OUT / filename}")


if __name__ == "__main__":
    main()
