"""API tokens strong enough to serve with (CONTRACT §9)."""

from __future__ import annotations

from pagerd.config.model import Config

# Long enough not to be guessed; `pagerd token` makes 43 characters.
MIN_TOKEN_LENGTH = 32
PLACEHOLDER_TOKEN = "dev-token-change-me"  # noqa: S105 - the old example's, refused


def weak_token_problems(config: Config) -> list[str]:
    """Each API token too weak to serve with, as ``FILE: key: what``.

    The token itself is never in the line: it may be a real one, just too short.
    """
    fix = f"at least {MIN_TOKEN_LENGTH} characters are needed (make one with: pagerd token)"

    def problem(token: str) -> str | None:
        if token == PLACEHOLDER_TOKEN:
            return f"is the example placeholder; {fix}"
        if len(token) < MIN_TOKEN_LENGTH:
            return f"is {len(token)} characters long; {fix}"
        return None

    problems = [
        f"{config.source}: http.tokens[{index}]: {what}"
        for index, token in enumerate(config.http.tokens)
        if (what := problem(token)) is not None
    ]
    tokens, lines = config.secrets.http_tokens, config.secrets.http_token_lines
    for index, token in enumerate(tokens):
        if (what := problem(token)) is not None:
            where = f"line {lines[index]}" if index < len(lines) else f"token {index + 1}"
            problems.append(
                f"{config.source}: http.tokens_file: {where} of {config.http.tokens_file} {what}"
            )
    return problems
