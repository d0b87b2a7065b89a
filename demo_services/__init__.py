"""Stand-ins for sql-service and mongo-service: the contract's reference implementation.

They back `dagster dev` when no service URL is configured, and give the tests and
the benchmark real HTTP servers with programmable faults and a request log.
"""

from demo_services.faults import FaultInjector, RequestLog
from demo_services.mongo_app import create_mongo_app
from demo_services.seed import seed_demo_data
from demo_services.server import ServiceServer
from demo_services.sql_app import create_sql_app
from demo_services.store import DemoStore

__all__ = [
    "DemoStore",
    "FaultInjector",
    "RequestLog",
    "ServiceServer",
    "create_mongo_app",
    "create_sql_app",
    "seed_demo_data",
]
