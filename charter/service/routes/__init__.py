"""The service's routes, one module per resource; each exposes an `APIRouter` named `router`."""
