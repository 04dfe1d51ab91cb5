"""Reinforcement learning
======================

An agent acts, the world answers with a new state and a reward, and the agent must learn which
actions lead to much reward over time. This chapter goes from the equations that define the best
behaviour, when the world is known, to the methods that post-train language models today, when all
there is to learn from is which of two answers a person preferred.

Read it in order. :doc:`dynamic_programming` states the Bellman equations of a Markov decision
process and solves them exactly on a small grid world: the value of a policy by one linear solve,
the optimal values by value iteration and by policy iteration, which agree. Every later method keeps
these equations and replaces the known model by samples. :doc:`q_learning` does it first for the
optimality equation: it moves each action's value towards a sampled one-step target, reaches the
values that dynamic programming computes on the same grid world, and grows into the deep Q-network
with a replay memory, a target network and the double estimator that removes the max's upward bias.

The next pages learn the policy itself. :doc:`policy_gradient` differentiates the expected return
through sampled episodes with the log-derivative trick, unbiased but noisy, and a baseline that
removes most of the noise without moving the mean. :doc:`actor_critic` learns that baseline, a
critic, beside the policy, an actor, with generalised advantage estimation trading the critic's bias
against the variance of sampled returns. :doc:`environments` writes the cart-pole and the
pendulum swing-up as pure JAX functions, identical bit for bit to gymnax's, so that thousands of
copies step at once and a whole training run compiles into one program. :doc:`ppo` reuses each
batch of episodes for several gradient steps and clips the probability ratio so that the policy
cannot run far from the one that collected the data; after about a hundred thousand steps of
experience it balances the pole for at least 450 of the 500 steps, on average over ten episodes.
:doc:`soft_actor_critic` turns to continuous actions: it maximises reward plus the policy's
entropy, with twin critics, slowly moving target critics and a temperature tuned to an entropy
target, and learns to swing the pendulum up and hold it. :doc:`mcts` plans instead of learning: on tic-tac-toe, a search tree guided by
visit counts and a prior (AlphaZero's PUCT rule) finds the moves that the exact minimax solution
calls optimal.

The chapter ends where reinforcement learning meets language models, when all there is to learn
from is which of two answers a person preferred. :doc:`reward_model` fits a Bradley–Terry reward to
such preferences and solves the KL-regularised objective of RLHF in closed form: the best policy is
the reference reweighted by the exponentiated reward. :doc:`dpo` skips the reward model and the
sampling loop altogether and turns the pairs into a logistic loss on log-probability ratios against
a frozen reference, whose minimiser is that same optimum. :doc:`grpo` keeps the sampling but drops
the critic: each answer's advantage is its reward standardised within a group of answers to the same
prompt.
"""

#: The recipes in reading order.
RECIPES = ("dynamic_programming", "q_learning", "policy_gradient", "actor_critic", "environments", "ppo",
           "soft_actor_critic", "mcts",
           "reward_model", "dpo", "grpo")
