"""A sum tree: prioritized replay's index (Schaul et al. 2016), in plain numpy.

A binary tree over `size` leaves, stored as one array: node i has children 2i and 2i+1, the root is
node 1 and leaf k is node `base + k`, with base the first power of two >= size. Every node holds the
sum of its leaves. Setting a leaf updates its log2(base) ancestors; find(u) walks down from the root
to the leaf whose prefix-sum interval holds u. Both work on a whole batch of leaves at once: one
numpy step per tree level, about 20 for a million-slot replay buffer, not one Python step per leaf.

The tree is float64: a million float32 additions to a running root would drift by more than the
smallest priorities.
"""
import numpy as np


class SumTree:
    def __init__(self, size):
        self.size = int(size)
        if self.size < 1:
            raise ValueError(f"a sum tree needs at least one leaf, got {size}")
        self.base = 1 << max(self.size - 1, 0).bit_length()  # leaves start here: a power of two >= size
        self.nodes = np.zeros(2 * self.base, np.float64)  # (2 * base,): node 0 is unused

    @property
    def total(self):
        return float(self.nodes[1])

    def leaves(self):
        """The leaf values (size,), a view: read it, set through set()."""
        return self.nodes[self.base:self.base + self.size]

    def get(self, index):
        return self.nodes[self.base + np.asarray(index)]

    def set(self, index, value):
        """leaf[index] = value for arrays (or scalars) of leaves, then every ancestor re-summed.
        With a leaf repeated in index, its last value wins (numpy's fancy assignment)."""
        if np.isscalar(index) or np.ndim(index) == 0:
            return self._set_one(int(index), float(value))
        node = self.base + np.atleast_1d(np.asarray(index, np.int64))  # (B,)
        if node.size and (node.min() < self.base or node.max() >= self.base + self.size):
            raise IndexError(f"sum tree leaf index out of range 0..{self.size - 1}")
        value = np.broadcast_to(np.asarray(value, np.float64), node.shape)
        if np.any(value < 0) or not np.all(np.isfinite(value)):
            raise ValueError("sum tree values must be finite and >= 0")
        self.nodes[node] = value
        while node[0] > 1:  # all leaves are on the same level, so they reach the root together
            node >>= 1  # a parent listed twice gets the same sum twice: no np.unique needed
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]

    def _set_one(self, index, value):
        """One leaf, walked up in plain Python: 20 float additions cost less than one np.unique."""
        if not 0 <= index < self.size:
            raise IndexError(f"sum tree leaf index {index} out of range 0..{self.size - 1}")
        if not (value >= 0 and np.isfinite(value)):
            raise ValueError(f"sum tree values must be finite and >= 0, got {value}")
        nodes = self.nodes
        node = self.base + index
        nodes[node] = value
        while node > 1:
            node >>= 1
            nodes[node] = nodes[2 * node] + nodes[2 * node + 1]

    def fill(self, values):
        """All leaves at once (size,), every level re-summed bottom up: for loading a saved tree."""
        values = np.asarray(values, np.float64)
        if values.shape != (self.size,) or np.any(values < 0) or not np.all(np.isfinite(values)):
            raise ValueError(f"sum tree leaves must be {self.size} finite values >= 0")
        self.nodes[:] = 0.0
        self.nodes[self.base:self.base + self.size] = values
        level = self.base
        while level > 1:
            level //= 2
            self.nodes[level:2 * level] = self.nodes[2 * level:4 * level:2] + self.nodes[2 * level + 1:4 * level:2]

    def find(self, u):
        """Leaves k with prefix(k) <= u < prefix(k) + leaf(k) for u (B,) in [0, total): a leaf is
        found with probability leaf / total when u is uniform. A walk never enters a zero subtree
        (rounding can leave u a hair above a sum), so with total > 0 every leaf found is > 0."""
        u = np.array(u, np.float64).reshape(-1)  # (B,), a copy: it is walked down in place
        node = np.ones(u.shape, np.int64)  # (B,)
        for _ in range(self.base.bit_length() - 1):  # one step per level, root to leaves
            left = 2 * node
            go_right = (u >= self.nodes[left]) & (self.nodes[left + 1] > 0)
            u -= np.where(go_right, self.nodes[left], 0.0)
            node = left + go_right
        return node - self.base
