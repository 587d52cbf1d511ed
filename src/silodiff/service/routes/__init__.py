"""One APIRouter per resource; ``app.py`` includes them all."""

from . import attribute, compartments, events, forget, generate, health, jobs, me

ROUTERS = [
    health.router,
    me.router,
    compartments.router,
    generate.router,
    attribute.router,
    forget.router,
    jobs.router,
    events.router,
]
