from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 5, echo: bool = False) -> AsyncEngine:
    """Built by the running program from its settings and disposed by it at shutdown."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        echo=echo,
        hide_parameters=True,
    )
