"""CUDA graphs: a scoring forward or a training step recorded once, then replayed as one launch.

At batch 120 these small nets cost the same at 32 px as at 224 px on an H100: a step is
bound by launching some 600 kernels one by one from Python, not by arithmetic. A
replayed graph launches them all at once. Both pieces are behind DIAM_CUDA_FAST (off by
default) until the GPU check has measured them; see docs/gpu.md.

Rules the recording imposes, and how they are kept:
- a graph reads and writes fixed memory: inputs are copied into static tensors, the
  scoring copy's weights are loaded into its own tensors in place, and the learning rate
  is a tensor the step reads (filled before each replay);
- recording runs nothing: a step captured is replayed at once, so every step that
  moves the weights (and the BatchNorm statistics) is a real training step;
- work to warm up before the recording runs on a side stream: for the forward, passes
  whose outputs are discarded (eval mode changes no state); for the step, the first
  real training steps, run eagerly;
- a batch of another shape (the last, shorter batch of an epoch or a pass) runs eagerly
  (the step) or fills the first rows of the static input (the forward: each output row
  depends on its input row only, in eval mode).
"""
from typing import Callable, Optional, Sequence

import torch
from torch import nn

# Real training steps run eagerly (on a side stream) before the step is recorded: cuDNN,
# autograd and the optimizer's momentum buffers are set up by then.
EAGER_STEPS_BEFORE_CAPTURE = 3
# Discarded forward passes before a scoring forward is recorded.
FORWARD_WARMUP_PASSES = 2


def _on_side_stream(work: Callable[[], None]) -> None:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        work()
    torch.cuda.current_stream().wait_stream(side)


class GraphedForward:
    """`outputs = fn(x)` recorded for inputs shaped like `example`; called with up to that many rows."""

    def __init__(self, fn: Callable[[torch.Tensor], Sequence[torch.Tensor]], example: torch.Tensor):
        self.static_input = torch.zeros_like(example)  # keeps the example's memory layout

        def warm_up():
            for _ in range(FORWARD_WARMUP_PASSES):
                fn(self.static_input)

        _on_side_stream(warm_up)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads' nets (DIAM_CUDA_FAST=streams) may launch work meanwhile.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = tuple(fn(self.static_input))

    def __call__(self, x: torch.Tensor):
        n = len(x)
        if n > len(self.static_input) or x.shape[1:] != self.static_input.shape[1:]:
            raise ValueError(f"a graph recorded for {tuple(self.static_input.shape)} cannot take {tuple(x.shape)}")
        self.static_input[:n].copy_(x)
        self.graph.replay()
        return tuple(out[:n] for out in self.outputs)


class ScoringGraphs:
    """The scoring forwards of one training run, kept across its passes.

    A pass builds a fresh inference copy of the net; the first pass of a kind records a
    graph over that copy, and later passes load their copy's weights into it in place,
    so the graph (which reads the recorded copy's memory) scores the current weights.
    """

    def __init__(self):
        self._graphs = {}  # key -> (recorded model, GraphedForward)

    def forward(self, model: nn.Module, key, fn: Callable[[nn.Module, torch.Tensor], Sequence[torch.Tensor]],
                example: torch.Tensor) -> Callable[[torch.Tensor], tuple]:
        if key in self._graphs:
            recorded, graphed = self._graphs[key]
            recorded.load_state_dict(model.state_dict())  # copy_ into the recorded tensors
        else:
            graphed = GraphedForward(lambda x: fn(model, x), example)
            self._graphs[key] = (model, graphed)
        return graphed


class ReplayedStep:
    """A training step (`compute_loss`, backward, `optimizer.step()`), replayed from one CUDA graph.

    `optimizer` reads its learning rate from the tensor `lr`, filled from `lrs` before
    each step (the schedule, precomputed), so that the recorded step takes the step's
    rate. With `capture` False every step runs eagerly, as it does on the CPU: the same
    optimizer, rates and order of operations without the recording.
    """

    def __init__(self, compute_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 optimizer: torch.optim.Optimizer, lr: torch.Tensor, lrs: Sequence[float], capture: bool):
        self.compute_loss, self.optimizer, self.lr, self.lrs = compute_loss, optimizer, lr, list(lrs)
        self.capture = capture
        self.steps_done = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.static_x = self.static_y = self.static_loss = None
        self.recorded_shape = None

    def _eager(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Once a graph exists its gradient tensors are the ones it writes: keep them (zeroed).
        self.optimizer.zero_grad(set_to_none=self.graph is None)
        loss = self.compute_loss(x, y)
        loss.backward()
        self.optimizer.step()
        return loss

    def _record(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.static_x, self.static_y = x.clone(), y.clone()
        self.optimizer.zero_grad(set_to_none=True)  # gradients are then allocated inside the graph's memory
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.static_loss = self.compute_loss(self.static_x, self.static_y)
            self.static_loss.backward()
            self.optimizer.step()
        self.graph = graph
        graph.replay()  # recording ran nothing: this is the step of this batch
        return self.static_loss

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.steps_done >= len(self.lrs):
            raise RuntimeError(f"the schedule has {len(self.lrs)} steps; step {self.steps_done + 1} was asked for")
        self.lr.fill_(self.lrs[self.steps_done])
        self.steps_done += 1
        if not self.capture:
            return self._eager(x, y)
        if self.recorded_shape is None:
            self.recorded_shape = x.shape  # the first batch is a full one (epochs start with full batches)
        if x.shape != self.recorded_shape:
            return self._eager(x, y)
        if self.graph is not None:
            self.static_x.copy_(x)
            self.static_y.copy_(y)
            self.graph.replay()
            return self.static_loss
        if self.steps_done <= EAGER_STEPS_BEFORE_CAPTURE:
            out = []
            _on_side_stream(lambda: out.append(self._eager(x, y)))
            return out[0]
        return self._record(x, y)
