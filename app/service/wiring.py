"""The composition root: every part of the service built from Settings, started and stopped in order.

The API's lifespan (and the tests) hold a `Components`; the faces are handed only its
`service`, the operations.
"""

from __future__ import annotations

from app.access.encryption import build_vault
from app.access.hashing import PromptHasher
from app.access.keys import KeyStore
from app.access.limits import Limiter
from app.access.sessions import ConsoleSessions
from app.access.signing import AuditSigner
from app.access.throttle import FailureThrottle
from app.llm import pricing
from app.llm.registry import ProviderRegistry, build_registry
from app.llm.templates import TemplateStore
from app.service.deliveries import WebhookDispatcher
from app.service.health import Health
from app.service.holds import LegalHolds
from app.service.operations import AgentService
from app.service.retention import Purger, retention_policy
from app.service.runner import TaskRunner
from app.service.schedule import Scheduler
from app.service.submission import Admission, Planner
from app.service.trail import AuditTrail
from app.settings import Settings
from app.storage.audit import TASK_CANCELLED_CHANNEL
from app.storage.database import Database
from app.storage.keys import KEY_EVENTS_CHANNEL
from app.storage.notifications import Listener
from app.storage.webhooks import WEBHOOK_READY_CHANNEL
from app.telemetry import metrics


class Components:
    """The database pool, keys, limits, providers, templates, the runner, the purge and its schedule."""

    def __init__(self, settings: Settings) -> None:
        if settings.prompt_hash_key is None:
            raise ValueError("PROMPT_HASH_KEY is not set")
        if settings.audit_signing_key is None:
            raise ValueError("AUDIT_SIGNING_KEY is not set")
        self.settings = settings
        # Results are sealed at rest under this key ring (RESULT_ENCRYPTION_KEYS, or a KMS plugin).
        self.vault = build_vault(settings)
        self.db = Database(settings)
        # One per process, for every credential checked here (API keys, and the console's sign-in with one).
        self.auth_failures = FailureThrottle(settings.auth_failure_limit, settings.auth_failure_window_seconds)
        self.keys = KeyStore(
            self.db,
            settings.auth_cache_seconds,
            rate_limit_per_minute=settings.rate_limit_per_minute,
            max_running_tasks=settings.max_running_tasks,
            failures=self.auth_failures,
            cipher=self.vault.cipher,
        )
        # Changes to keys made by any process (revocations, limits, new keys), heard at once.
        self.listener = Listener(self.db)
        self.listener.subscribe(KEY_EVENTS_CHANNEL, self.keys.key_changed, on_connect=self.keys.resync)
        self.limits = Limiter(self.db)
        self.providers: ProviderRegistry = build_registry(settings)
        self.templates = TemplateStore(settings.templates_dir)
        self.runner = TaskRunner(self.db, settings, self.vault)
        # A cancel made on any replica stops the provider call on the one running the task.
        self.listener.subscribe(
            TASK_CANCELLED_CHANNEL, self.runner.task_cancelled, on_connect=self.runner.catch_up_cancels
        )
        # Completion webhooks, from the outbox the final status writes (app.service.deliveries).
        self.webhooks = WebhookDispatcher(self.db, self.vault.cipher, settings)
        self.listener.subscribe(WEBHOOK_READY_CHANNEL, self.webhooks.ready, on_connect=self.webhooks.caught_up)
        self.holds = LegalHolds(self.db)
        # The console's sign-in (app.console): sessions over the same keys, throttled alike.
        self.sessions = ConsoleSessions(
            self.db,
            self.keys,
            lifetime_seconds=settings.console_session_hours * 3600,
            idle_seconds=settings.console_session_idle_minutes * 60,
        )
        self.purger = Purger(self.db, settings)
        self.trail = AuditTrail(self.db, AuditSigner(settings.audit_signing_key.get_secret_value()))
        self.schedule = Scheduler(settings, self.purger, self.runner, self.trail)
        retention = retention_policy(settings)
        hasher = PromptHasher(settings.prompt_hash_key.get_secret_value())
        self.service = AgentService(
            db=self.db,
            keys=self.keys,
            limits=self.limits,
            planner=Planner(
                settings, self.providers, self.templates, hasher, self.vault, lease_seconds=self.runner.lease_seconds
            ),
            admission=Admission(
                self.db, self.limits, self.runner, self.vault, cache_ttl_seconds=settings.cache_ttl_seconds
            ),
            vault=self.vault,
            sessions=self.sessions,
            runner=self.runner,
            health=Health(self.db, self.schedule, self.providers, retention),
            holds=self.holds,
            trail=self.trail,
            retention=retention,
            traced=settings.tracing_requests,
            providers=self.providers,
        )
        metrics.watch_pool(self.db)
        metrics.register_routing(self.providers.names, self.providers.known_models)

    async def start(self) -> None:
        pricing.warm()  # the price data loads here (~0.2 s), not in the first task's answer
        await self.db.open()
        await self.listener.start(wait_seconds=self.settings.db_connect_timeout_seconds)
        # The audit partitions of the days ahead, before the first request: made here, awaited,
        # rather than as a job racing the first requests (it never fails start-up: the reserve
        # partition takes any event a missing day would, and the job tries again).
        await self.purger.make_days_ahead()
        self.schedule.start()
        await self.webhooks.start()

    async def stop(self) -> None:
        self.schedule.stop()
        await self.runner.drain(self.settings.provider_timeout_seconds)
        await self.webhooks.stop()
        await self.providers.aclose()
        await self.listener.stop()
        await self.db.close()
