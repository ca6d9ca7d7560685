"""What one LLM call costs at the [agent] table's prices: the one rule every agent that logs turns uses."""

from typing import Any

from autoresearch.runner.agents.base import AgentSettings

Prices = tuple[float, float]  # (input, output) dollars per million tokens

# Cache prices as shares of the input price. Anthropic and OpenAI (the gpt-5 family) both bill a cached input
# token at a tenth; Anthropic bills a write to its 5-minute cache at 1.25x, OpenAI bills no writes.
CACHE_READ_PRICE = 0.1
CACHE_WRITE_PRICE = 1.25


def prices(settings: AgentSettings) -> Prices:
    """The [agent] table's prices."""
    return settings.price_input_per_mtok, settings.price_output_per_mtok


def usage_row(prices: Prices, *, input_tokens: int = 0, output_tokens: int = 0, cache_read_tokens: int = 0,
              cache_write_tokens: int = 0) -> dict[str, Any]:
    """The usage of one call in the store's terms (log_turn's usage), with its cost at prices.

    input_tokens are the uncached ones: an API that counts cached tokens inside its input must subtract them first.
    """
    price_in, price_out = prices
    cost = (
        input_tokens * price_in
        + output_tokens * price_out
        + cache_read_tokens * price_in * CACHE_READ_PRICE
        + cache_write_tokens * price_in * CACHE_WRITE_PRICE
    ) / 1e6
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read_tokens,
        "cache_write_tokens": cache_write_tokens,
        "cost_usd": cost,
    }
