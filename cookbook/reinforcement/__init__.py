"""Reinforcement learning
======================

An agent acts, the world answers with a new state and a reward, and the agent must learn which
actions lead to much reward over time. This chapter goes from the equations that define the best
behaviour, when the world is known, to the methods that post-train language models today, when all
there is to learn from is which of two answers a person preferred.

Read it in order. :doc:`dynamic_programming` states the Bellman equations of a Markov decision
process and solves them exactly on a small grid world: the value of a policy by one linear solve,
the optimal values by value iteration and by policy iteration, which agree. Every later method keeps
these equations and replaces the known model by samples. :doc:`actor_critic` learns from sampled
episodes alone: an actor (the policy) is pushed towards actions that did better than a critic (a
value function) expected, with generalised advantage estimation trading the critic's bias against
the variance of sampled returns; on the same grid world its greedy policy reaches the optimal value
that dynamic programming computes. :doc:`ppo` reuses each batch of episodes for several gradient
steps and clips the probability ratio so that the policy cannot run far from the one that collected
the data; with the same advantages it reaches the same optimum.

The chapter ends where reinforcement learning meets language models. :doc:`dpo` skips the reward
model and the sampling loop of RLHF altogether: it turns pairs of preferred and rejected answers into
a logistic loss on log-probability ratios against a frozen reference, whose minimiser is the optimum
of the KL-regularised objective, reached on a small bandit in its tests.
"""

#: The recipes in reading order.
RECIPES = ("dynamic_programming", "q_learning", "policy_gradient", "actor_critic", "ppo", "mcts", "reward_model", "dpo", "grpo")
