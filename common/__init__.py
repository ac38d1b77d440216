"""What env/ and ppo/ (and the application) share, written once: spaces, statistics, atomic files and
checkpoints, random states, the policy protocol and episode runner, the vector env and the logger.

Imports nothing of this project; everything else may import it.
"""
