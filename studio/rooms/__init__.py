"""Training and evaluating the Rooms model; the world and the network themselves are in ``studio.core.rooms``."""
