"""The Celery app of ibpipeline's workers: ``celery -A ibpipeline.celery_worker worker ...`` (or
``dagster-celery worker start -A ibpipeline.celery_worker ...``; see deploy/README.md).

Broker and backend come from ``$IBPIPELINE_CELERY_BROKER`` / ``$IBPIPELINE_CELERY_BACKEND``, the
same variables the executor reads, so no URL (nor its password) is written to a config file.
"""

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from ibpipeline import settings
from ibpipeline.distributed import CELERY_APP_CONFIG

app = make_app(
    CeleryExecutor.for_cli(
        broker=settings.celery_broker_url(),
        backend=settings.celery_backend_url(),
        config_source=dict(CELERY_APP_CONFIG),
    ).app_args()
)
execute_plan = create_task(app)
