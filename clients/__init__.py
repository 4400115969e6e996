"""What services import: the usage reporter and the kill switch. Never imports Faust."""

from tokenbrake.clients.killswitch import Decision, KillSwitch, TokenBucket
from tokenbrake.clients.reporter import UsageReporter, hash_user
from tokenbrake.clients.security import KafkaSecurity
from tokenbrake.clients.usage import from_anthropic_usage, from_openai_usage

__all__ = ["Decision", "KafkaSecurity", "KillSwitch", "TokenBucket", "UsageReporter", "from_anthropic_usage",
           "from_openai_usage", "hash_user"]
