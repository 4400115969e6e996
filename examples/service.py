"""A service wired to tokenbrake: report every call, obey the kill switch.

Run it from the repository's root, beside a running worker::

    TOKENBRAKE_KAFKA_BOOTSTRAP=127.0.0.1:PORT python -m examples.service
"""
import asyncio
import os

from tokenbrake.clients import KillSwitch, UsageReporter, from_openai_usage
from tokenbrake.clients.killswitch import DEV_KEYS


async def fake_llm(model: str, prompt: str) -> dict:
    """Stands in for an OpenAI chat completion: returns its usage block."""
    await asyncio.sleep(0.002)
    return {"prompt_tokens": 20_000 + len(prompt), "completion_tokens": 800,
            "prompt_tokens_details": {"cached_tokens": 4_000}}


async def handle(ks: KillSwitch, reporter: UsageReporter, tenant: str, user: str, prompt: str) -> str:
    decision = ks.decide(tenant, "chat", user)          # microseconds, no I/O
    if not decision.admit():                            # blocked, or over the throttle rate
        return f"refused ({decision.action}: {decision.reason})"
    model = decision.model("gpt-4o")                    # the downgrade target, if any
    usage = await fake_llm(model, prompt)
    reporter.record(tenant_id=tenant, feature_id="chat", user_id=user, provider="openai",
                    model=model, **from_openai_usage(usage))  # never blocks, never raises
    return model


async def main(bootstrap: str, calls: int = 100, **topics: str) -> list[str]:
    keys = os.environ.get("TOKENBRAKE_CONTROL_SIGNING_KEYS", DEV_KEYS)
    ks = KillSwitch(bootstrap, topics.get("control", "tokenbrake.control"), keys=keys,
                    user_id_salt="example-salt")  # the reporter's salt: decide(user=raw id) matches user controls
    reporter = UsageReporter(bootstrap, topics.get("usage", "tokenbrake.usage"), user_id_salt="example-salt")
    await ks.start()
    await reporter.start()
    try:
        return [await handle(ks, reporter, "acme", f"user-{i % 7}", "hello") for i in range(calls)]
    finally:
        await reporter.stop()
        await ks.stop()


if __name__ == "__main__":  # TOKENBRAKE_KAFKA_BOOTSTRAP=127.0.0.1:PORT python -m examples.service
    import sys

    bootstrap = os.environ.get("TOKENBRAKE_KAFKA_BOOTSTRAP")
    if not bootstrap:
        sys.exit("set TOKENBRAKE_KAFKA_BOOTSTRAP=HOST:PORT (the broker `tokenbrake run` or `tokenbrake broker` "
                 "printed as bootstrap=...), then run: python -m examples.service")
    print(asyncio.run(main(bootstrap)))
