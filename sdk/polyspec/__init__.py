"""polyspec client SDK: talk to a polyspec coordinator over gRPC (grpcio + protobuf only).

```python
from polyspec import Client

with Client("localhost:50051", timeout=60) as client:
    result = client.generate("def fibonacci(n):", max_new_tokens=64, temperature=0)
    print(result.text, result.stats.acceptance_rate)
```
"""

from polyspec.client import AsyncClient, AsyncGenerationStream, Client, GenerationStream
from polyspec.convert import LookaheadSpec, parse_lookahead
from polyspec.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PolyspecError,
    RequestCancelledError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from polyspec.retry import RetryPolicy
from polyspec.types import (
    ALGORITHMS,
    LOOKAHEAD_POLICIES,
    SCHEDULERS,
    AlgorithmName,
    ChatMessage,
    FinishReasonName,
    GenerationResult,
    GenerationStats,
    Lookahead,
    LookaheadPolicyName,
    SchedulerName,
)

__all__ = [
    "ALGORITHMS",
    "LOOKAHEAD_POLICIES",
    "SCHEDULERS",
    "AlgorithmName",
    "AsyncClient",
    "AsyncGenerationStream",
    "ChatMessage",
    "Client",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FinishReasonName",
    "GenerationResult",
    "GenerationStats",
    "GenerationStream",
    "InternalError",
    "InvalidArgumentError",
    "Lookahead",
    "LookaheadPolicyName",
    "LookaheadSpec",
    "NotFoundError",
    "PolyspecError",
    "RequestCancelledError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "SchedulerName",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "parse_lookahead",
]
