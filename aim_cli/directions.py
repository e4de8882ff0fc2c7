"""Focus directions, without torch: profiles and the command line use them before any model loads."""

BOOST = 1  # the class's logit gets +|eps|: looked for harder
SUPPRESS = -1  # the class's logit gets -|eps|: ignored more


def direction_name(direction: int) -> str:
    """'up' for a boost, 'down' for a suppression: the word profiles, flags and reports use."""
    return "up" if direction == BOOST else "down"
