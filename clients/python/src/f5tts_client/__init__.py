"""Python client of the F5-TTS voice-cloning endpoint (RunPod serverless): sync `Client` and async `AsyncClient`.

    from f5tts_client import Client

    with Client() as client:  # RUNPOD_API_KEY + F5TTS_ENDPOINT_ID (or F5TTS_ENDPOINT_URL)
        result = client.synthesize("Hello there.", voice="default", format="mp3")
        result.save("hello.mp3")

Both clients are generated from the worker's job contract (`clients/schema/contract.json`), so their methods,
parameters and models match what the worker accepts. See docs/client.md.
"""

from f5tts_client._async._client import AsyncClient, AsyncVoices
from f5tts_client._async._jobs import AsyncJob
from f5tts_client._async._results import AsyncSynthesisResult
from f5tts_client._async._stream import AsyncAudioStream
from f5tts_client._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    EndpointNotFound,
    F5TTSError,
    JobCancelled,
    JobError,
    JobNotFound,
    JobTimeout,
    RateLimitError,
    ServerError,
    UnexpectedResponse,
    WorkerError,
)
from f5tts_client._generated import models
from f5tts_client._generated.error_code_exceptions import *  # noqa: F403 (one exception class per error code)
from f5tts_client._generated.error_code_exceptions import ERRORS_BY_CODE
from f5tts_client._generated.error_code_exceptions import __all__ as _error_names
from f5tts_client._generated.models import CONTRACT_VERSION, ErrorCode
from f5tts_client._not_given import NOT_GIVEN, NotGiven
from f5tts_client._sync._client import Client, Voices
from f5tts_client._sync._jobs import Job
from f5tts_client._sync._results import SynthesisResult
from f5tts_client._sync._stream import AudioStream
from f5tts_client._types import AudioChunk, JobState, RunPodJobStatus
from f5tts_client._version import __version__

JobStatus = RunPodJobStatus  # its former name, kept so that existing imports work

__all__ = [
    "CONTRACT_VERSION",
    "ERRORS_BY_CODE",
    "NOT_GIVEN",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncAudioStream",
    "AsyncClient",
    "AsyncJob",
    "AsyncSynthesisResult",
    "AsyncVoices",
    "AudioChunk",
    "AudioStream",
    "AuthenticationError",
    "Client",
    "ConfigurationError",
    "EndpointNotFound",
    "ErrorCode",
    "F5TTSError",
    "Job",
    "JobCancelled",
    "JobError",
    "JobNotFound",
    "JobState",
    "JobStatus",
    "JobTimeout",
    "NotGiven",
    "RateLimitError",
    "RunPodJobStatus",
    "ServerError",
    "SynthesisResult",
    "UnexpectedResponse",
    "Voices",
    "WorkerError",
    "__version__",
    "models",
]
# ... and one exception class per contract error code (InvalidInput, VoiceNotFound, ...).
__all__ += [name for name in _error_names if name not in __all__]
