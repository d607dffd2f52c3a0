"""CompiledModel: the nn.Module users call. Runs the lowered graph; checks inputs and weights first.

- Inputs are checked against the example inputs before any kernel runs: count, type, dtype, device,
  rank, and every dimension the model fixes. A new batch size or sequence length reuses the graph when
  the capture was dynamic, else compiles a shape-specialized variant (kernels are shared).
- Weights: every parameter and buffer of the user's model is watched (identity, storage and autograd
  version counter). Any change — ``load_state_dict``, an optimizer step, in-place edits under no_grad,
  assigning a new Parameter — makes the next call recompile (re-analyze, re-select, re-pack), so a
  compiled model never returns results for stale weights. Writes through ``.data`` bypass the version
  counter; call ``refresh()`` after those (and after in-place writes to tensors made under
  ``torch.inference_mode()``, which have no version counter).
- Modes: a model whose train() result differs from eval() (Dropout, BatchNorm, a branch on
  ``self.training``) gets a variant per mode, captured in that mode: a train-mode call runs dropout from
  torch's RNG and BatchNorm with batch statistics, updating the module's running statistics in place, as
  eager does. Running-statistic updates refresh nothing in the train-mode variant (it reads them); the
  eval-mode variant, whose BatchNorm was folded from them, is dropped and compiled again on the next
  eval-mode call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings

import torch
from torch.utils import _pytree as pytree

from sparsec.compiler import graph_cache, input_check
from sparsec.compiler import stages as stage_text
from sparsec.compiler.capture import capture
from sparsec.compiler.context import CompileContext
from sparsec.compiler.options import CompileOptions
from sparsec.compiler.pipeline import PASSES, STAGES, build_report, layers_of, run_passes
from sparsec.compiler.variant import Variant
from sparsec.errors import CaptureError, InputError
from sparsec.report.report import Report
from sparsec.runtime import finite, trace_gate, training
from sparsec.targets import get_target
from sparsec.targets.cpu.threads import default_threads

log = logging.getLogger("sparsec")


class _WeightWatch:
    """Detects any change to the tensors the compiled graph read, in ~1 us per tensor.

    Records, for every module, where each constant lives (its ``_parameters`` / ``_buffers`` /
    ``__dict__`` entry) with the tensor's identity, storage pointer and autograd version, plus the
    module tree itself. Walking ``named_parameters()`` on every call cost 1.2 ms for BERT-base.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.tree, self.entries = [], []
        for _, mod in model.named_modules():
            for name, child in mod._modules.items():
                self.tree.append((mod._modules, name, child))
            for store in (mod._parameters, mod._buffers):
                for name, t in store.items():
                    if t is not None:
                        self.entries.append((store, name, t, _version(t), t.data_ptr()))
            for name, value in vars(mod).items():
                # torch.nn.utils.prune re-assigns ``name`` from the watched ``name_orig`` * ``name_mask`` on
                # every eager call: a new object each time, never a weight change
                derived = f"{name}_orig" in mod._parameters
                if isinstance(value, torch.Tensor) and not name.startswith("_") and not derived:
                    self.entries.append((mod.__dict__, name, value, _version(value), value.data_ptr()))

    def changed_tensors(self) -> list | None:
        """The tensors written in place since recording; None when anything was replaced or moved."""
        for store, name, child in self.tree:
            if store.get(name) is not child:
                return None
        out = []
        for store, name, t, version, ptr in self.entries:
            if store.get(name) is not t or t.data_ptr() != ptr:
                return None
            if t._version != version:
                out.append(t)
        return out

    def changed(self) -> bool:
        """True when a module, parameter, buffer or tensor attribute was replaced or written in place."""
        for store, name, child in self.tree:
            if store.get(name) is not child:
                return True
        for store, name, t, version, ptr in self.entries:
            if store.get(name) is not t or _version(t) != version or t.data_ptr() != ptr:
                return True
        return False


def _version(t: torch.Tensor) -> int | None:
    """The autograd version counter; None for inference tensors (made under torch.inference_mode), which
    have none. Those can only be written in place inside inference_mode; call ``refresh()`` after that."""
    return None if t.is_inference() else t._version


class CompiledModel(torch.nn.Module):
    """A model compiled by ``sparse_compile``; call it like the original."""

    def __init__(
        self, model: torch.nn.Module, args: tuple, kwargs: dict | None, options: CompileOptions, target: str = "cpu",
        seed=None,
    ) -> None:
        super().__init__()
        self.target = target
        self._model = [model]  # a list so nn.Module does not register the user's model as a child
        self.options = options
        self._example_flat, self._in_spec = pytree.tree_flatten((args, kwargs or {}))
        self._plain_inputs = not kwargs and len(args) == len(self._example_flat) and all(
            isinstance(a, torch.Tensor) for a in args
        )
        self._train_mods = training.train_mode_modules(model)
        self._autocast_warned = False  # one warning per model when called inside torch.autocast
        # a train()/eval() difference that no Dropout/BatchNorm module explains (checked by running it).
        # A loaded artifact (seed given) was checked when it was compiled; running it here would read the
        # saved torch.export program that loading deliberately leaves unread.
        self._train_dependent = (seed is None and not self._train_mods
                                 and training.differs_in_train_mode(model, args, kwargs or {}))
        # the modules whose training flags choose the variant (the root's covers a branch on self.training)
        self._mode_mods = [model, *self._train_mods] if self._train_mods or self._train_dependent else []
        self._primary: Variant | None = None
        self._lock = threading.RLock()
        self._variants: list[Variant] = []
        self._seed = seed  # a loaded artifact's variant, or program and formats (compiler/artifact.py), used once
        self._first = seed is None  # the first compile may come from the captured-graph cache
        # [the source model] when the graph would only replay it (a list: nn.Module must not register it)
        self._eager: list = []
        self._compile(args, kwargs or {})

    # --- compiling ----------------------------------------------------------------------------------
    def _mode(self) -> tuple | None:
        """The variant key of the model's current mode: None in eval mode (and for a model whose result
        does not depend on it), else the training flags of the root and of each Dropout/BatchNorm."""
        if not self._mode_mods:
            return None
        flags = tuple(m.training for m in self._mode_mods)
        return flags if any(flags) else None

    def _compile(self, args: tuple, kwargs: dict, dynamic: bool | None = None, mode: object = ...) -> Variant:
        model = self._model[0]
        mode = self._mode() if mode is ... else mode
        # Only a mode's first capture is dynamic by default: later variants exist because a shape fell outside
        # its ranges (see _new_variant for the exception).
        if dynamic is None:
            dynamic = self.options.dynamic and not any(v.mode == mode for v in self._variants)
        seed, self._seed = self._seed, None
        if mode is not None:
            # a saved artifact is an eval-mode compile of the weights it was saved with: not this mode's, and
            # stale once training changed the weights, so the eval variant is compiled from the model later
            seed = None
        if self.options.check_finite:
            finite.check_weights(model)
            finite.check_inputs(pytree.tree_leaves((args, kwargs)))
        cache_key, first = None, self._first
        self._first = False
        # the captured-graph cache (sparsec/compiler/graph_cache.py) holds eval-mode compiles only: a
        # train-mode graph updates the model's buffers in place, which its saved form does not carry
        if seed is None and first and mode is None:
            seed, cache_key = graph_cache.lookup(self, model, args, kwargs, dynamic)
        if isinstance(seed, Variant):  # a saved or cached compile, restored
            return self._install(seed, model, from_artifact=not isinstance(seed.ctx.root, torch.nn.Module))
        cap = seed.captured if seed is not None else capture(model, args, kwargs, dynamic=dynamic,
                                                             training=mode is not None)
        ctx = CompileContext(options=self.options, root=model, target=self.target, training=mode is not None)
        ctx.notes.extend(cap.notes)
        if seed is not None:
            ctx.pinned_formats = seed.formats
        ctx.example_inputs = tuple(pytree.tree_leaves((args, kwargs)))
        threads = self.options.threads or default_threads()
        ctx.machine, status = ctx.target.machine(threads, self.options.calibrate, seed is not None)
        ctx.stages["calibrate"] = stage_text.calibrate_stage_text(ctx, status)
        with _untouched(model) if mode is not None else contextlib.nullcontext():
            gm = run_passes(cap.module, ctx)
        # export's own input-constraint hook re-checks what _check_inputs and the graph's guard node
        # already check (its pytree walk cost ~25 us per call); drop it
        for key, hook in list(gm._forward_pre_hooks.items()):
            if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":
                del gm._forward_pre_hooks[key]
        if all(isinstance(x, torch.Tensor) for x in ctx.example_inputs):
            # the remaining hooks toggle a config for nn.Module-typed graph inputs; with tensors only they
            # are no-ops that cost ~10 us per call
            gm._forward_pre_hooks.clear()
            gm._forward_hooks.clear()
        # The exported module flattens its inputs and nests its outputs with pytree on every call; inputs
        # are flattened once already here, so the graph is recompiled to take and return flat lists.
        out_spec = gm._out_spec
        gm.graph._codegen = torch.fx.graph.CodeGen()
        gm.recompile()
        variant = Variant(cap, gm, ctx, build_report(gm, ctx.notes), input_check.input_specs(cap), out_spec,
                          mode=mode)
        ctx.stages["lowered"] = stage_text.lowered_stage_text(gm)
        self._install(variant, model, from_artifact=seed is not None)
        if cache_key is not None:
            graph_cache.store(self, cache_key)
        return variant

    def _install(self, variant: Variant, model, from_artifact: bool) -> Variant:
        variant.trainable = training.trainable_graph(variant.module, model)
        training.apply_patterns(variant.module, getattr(self, "_patterns", {}))
        self._params = [p for p in model.parameters() if p.is_floating_point()]
        self._variants.append(variant)
        self._weights = _WeightWatch(model)
        # The example's variant is the one users inspect (report, ir) and artifacts save: a mode's first one,
        # the eval-mode one once it exists (an artifact holds eval semantics)
        primary = self._primary
        first_of_mode = sum(v.mode == variant.mode for v in self._variants) == 1
        if primary is None or primary not in self._variants or (
                first_of_mode and variant.mode is None and primary.mode is not None):
            self._primary = variant
            self._eager = self._eager_model(model, variant.ctx, variant.module, from_artifact)
            if self.options.dump_dir:
                self.dump(self.options.dump_dir)
        return variant

    def _eval_primary(self) -> None:
        """Make the primary an eval-mode variant (compiling one when the model has only trained so far):
        artifacts, pickles and copies hold the eval-mode compile."""
        if self._primary.mode is not None:
            self._sync_weights()  # the train-mode variant too: compiling resets the weight watch
        if self._primary.mode is not None:
            ex_args, ex_kwargs = pytree.tree_unflatten(self._example_flat, self._in_spec)
            self._compile(ex_args, ex_kwargs, mode=None)

    def _eager_model(self, model, ctx: CompileContext, gm, from_artifact: bool) -> list:
        """The user's model itself when the compiled graph would only replay it: every layer stayed dense
        and no channel was removed. Calling it skips the exported graph's per-op dispatch, guards and
        variant matching (~20 us per call on a tiny model); inputs and weights are still checked."""
        if not ctx.target.runs_source_when_dense or from_artifact or ctx.shrunk or self.options.quantize:
            return []
        if any(layer.format != "dense" for layer in layers_of(gm)):
            return []
        self._eager_training = model.training
        ctx.stages["lowered"] = stage_text.lowered_stage_text(
            gm, "every layer is dense and no channel was removed: calls run the source model, not this graph")
        return [model]

    def refresh(self) -> None:
        """Recompile from the model's current weights (needed only after writes through ``.data``)."""
        with self._lock:
            args, kwargs = pytree.tree_unflatten(self._example_flat, self._in_spec)
            self._variants.clear()
            self._compile(args, kwargs)

    def set_patterns(self, patterns: dict) -> None:
        """Store exactly these positions of these weights from now on: ``{weight parameter: bool mask}``.

        Dynamic sparse training (RigL, SET) grows weights *at zero*, which a pattern read off the weight's
        nonzeros would not store (and so never give a gradient). Layers whose mask changed are re-packed
        now, in place (no recompile); variants compiled later use the masks too. Every weight must be
        computed by a trainable compiled sparse layer (NotImplementedError otherwise), and be zero outside
        its mask (InputError)."""
        with self._lock:
            known = {id(m.train_refs[0]) for v in self._variants for m in training.sparse_modules(v.module)}
            for weight in patterns:
                if id(weight) not in known:
                    raise NotImplementedError(
                        f"a weight of shape {tuple(weight.shape)} is not computed by a trainable compiled sparse "
                        "layer (a layer that stayed dense, or a derived weight): its mask cannot be kept; compile "
                        "with force_format='csr' and min_weight_numel=0")
            self._patterns = {id(w): (w, m) for w, m in patterns.items()}
            for v in self._variants:
                training.apply_patterns(v.module, self._patterns)

    # --- calling ------------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        """Check inputs and weights, then run the lowered graph of the matching shape variant."""
        if self._plain_inputs and not kwargs and len(args) == len(self._example_flat) and all(
            isinstance(a, torch.Tensor) for a in args
        ):
            flat = list(args)  # the common case: positional tensors, nothing to flatten
            self._check_leaves(flat)
        else:
            flat, spec = pytree.tree_flatten((args, kwargs))
            self._check_inputs(flat, spec)
        if not self._autocast_warned and _autocast_around(flat):
            self._autocast_warned = True
            warnings.warn(
                "sparsec: the compiled model is called inside torch.autocast, which it does not apply: it computes "
                "in the dtypes it was compiled for (eager would cast its matmuls to the autocast dtype, and return "
                "that dtype). Put the autocast inside forward before compiling, or convert the model with "
                "model.to(dtype)", UserWarning, stacklevel=2)
        if self.options.check_finite:
            finite.check_inputs(flat)
        mode = self._mode()
        with self._lock:
            self._sync_weights()
            eager = self._eager
        if eager and eager[0].training == self._eager_training:
            try:
                with trace_gate.running():
                    return eager[0](*args, **kwargs)
            except Exception:  # noqa: BLE001 - the graph path below raises the InputError that names the problem
                pass
        with self._lock:
            variant = self._find_variant(flat, mode)
            if variant is None:
                variant = self._new_variant(args, kwargs, flat, mode)
        try:
            return self._run(variant, flat)
        except AssertionError as exc:  # raised by the graph's first node, before any kernel ran
            if "Guard failed" not in str(exc) or not variant.captured.dynamic:
                raise
        # The sizes fit every dimension's range but break a relation between them that the dynamic capture
        # assumed (e.g. H * W fixed by a Linear after a flatten): compile a variant for exactly these
        # shapes, which raises InputError naming them when the model cannot run on them at all.
        with self._lock:
            variant = self._find_variant(flat, mode, static_only=True) or self._new_variant(args, kwargs, flat, mode)
        return self._run(variant, flat)

    def _sync_weights(self) -> None:
        """Bring every variant up to the model's current weights (under the lock): refresh packed values in
        O(nnz), drop the variants compiled from weights that changed otherwise, recompile when none is left.
        Runs before any compile, which records the weights anew (the watch would then miss a stale variant)."""
        if self.options.check_finite and self._weights.changed():  # also when no recompile follows
            finite.check_weights(self._model[0])
        if self._weights.changed():
            kept = training.refresh_variants(self._variants, self._weights)
            if kept:
                if len(kept) < len(self._variants):
                    log.info("sparsec: %d variant(s) compiled from changed weights dropped",
                             len(self._variants) - len(kept))
                    self._variants[:] = kept
                    if self._primary not in kept:
                        self._primary = kept[0]
                log.info("sparsec: weights updated in place; packed values refreshed in O(nnz)")
                self._weights = _WeightWatch(self._model[0])
        if self._weights.changed():
            log.info("sparsec: the model's weights changed since compiling; recompiling")
            self._variants.clear()
            ex_args, ex_kwargs = pytree.tree_unflatten(self._example_flat, self._in_spec)
            self._compile(ex_args, ex_kwargs)

    def _run(self, variant: Variant, flat: list):
        """Run a variant; when grad is required and it cannot give gradients, its outputs raise on backward.
        Holds the trace gate shared: a capture in another thread would intercept the graph's module calls."""
        with trace_gate.running():
            out = variant(flat)
        if variant.trainable or not torch.is_grad_enabled():
            return out
        anchor = next((t for t in (*flat, *self._params) if isinstance(t, torch.Tensor) and t.requires_grad), None)
        return out if anchor is None else training.guard_outputs(out, anchor)

    def _check_inputs(self, flat: list, spec) -> None:
        if spec != self._in_spec:
            input_check.explain_structure(self._example_flat, self._in_spec, flat, spec)
        self._check_leaves(flat)

    def _check_leaves(self, flat: list) -> None:
        input_check.check_leaves(flat, self._example_flat, self._primary)

    def _find_variant(self, flat: list, mode: tuple | None, static_only: bool = False) -> Variant | None:
        # Shape-specialized variants first: they exist because the dynamic one rejected those exact shapes.
        for v in sorted(self._variants, key=lambda v: v.captured.dynamic):
            if v.mode != mode or static_only and v.captured.dynamic:
                continue
            if all(input_check.fits(s, x) for s, x in zip(v.specs, flat, strict=True)):
                return v
        return None

    def _new_variant(self, args, kwargs, flat, mode: tuple | None) -> Variant:
        if sum(v.mode == mode for v in self._variants) >= self.options.max_variants:
            shapes = [tuple(x.shape) for x in flat if isinstance(x, torch.Tensor)]
            raise InputError(
                f"input shapes {shapes} need a new compiled variant, and this model has "
                f"{len(self._variants)} already (max_variants={self.options.max_variants})"
            )
        log.info("sparsec: compiling a variant for input shapes %s", [getattr(x, "shape", x) for x in flat])
        # A size > 1 where the example had 0/1 (static in the first capture) is captured with dynamic
        # dimensions again, so one more variant covers every such size.
        grows = any(
            isinstance(x, torch.Tensor) and isinstance(ex, torch.Tensor) and x.dim() == ex.dim()
            and any(e <= 1 < g for e, g in zip(ex.shape, x.shape, strict=True))
            for x, ex in zip(flat, self._example_flat, strict=True)
        )
        try:
            return self._compile(args, kwargs, dynamic=self.options.dynamic and grows or None, mode=mode)
        except CaptureError as exc:
            shapes = [tuple(x.shape) for x in flat if isinstance(x, torch.Tensor)]
            raise InputError(f"the model cannot run on input shapes {shapes}: {exc}") from exc

    # --- saving (sparsec/compiler/artifact.py) -------------------------------------------------------
    def save(self, path) -> None:
        """Write this model as an artifact directory; ``sparsec.load(path)`` reads it back."""
        from sparsec.compiler import artifact

        with self._lock:
            self._eval_primary()
            artifact.save(self, path)

    def __reduce__(self):
        # pickle / torch.save store the artifact's files; unpickling gives a frozen model
        from sparsec.compiler import artifact

        with self._lock:
            self._eval_primary()
            return from_bytes, (artifact.to_bytes(self),)

    def __deepcopy__(self, memo):
        import copy

        from sparsec.compiler import artifact

        with self._lock:
            self._eval_primary()
            model = copy.deepcopy(self._model[0], memo)
            return from_bytes(artifact.to_bytes(self), model=model)

    def train(self, mode: bool = True) -> CompiledModel:
        """Set this module's mode and the source model's. A model with train-dependent layers (Dropout,
        BatchNorm, a branch on ``self.training``) then runs the variant compiled in that mode (compiled on
        the first call in it): train-mode dropout and batch statistics as in eager, eval semantics again
        after ``eval()`` (``eval()`` is ``train(False)``)."""
        super().train(mode)
        self._model[0].train(mode)
        return self

    def state_dict(self, *args, **kwargs):
        """The weights the model computes from: the source model's state dict (dense, unpacked)."""
        return self._model[0].state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load into the source model; the next call recompiles for the new weights (the weight watch)."""
        return self._model[0].load_state_dict(state_dict, strict=strict, assign=assign)

    # --- inspecting ---------------------------------------------------------------------------------
    def report(self) -> Report:
        """The per-layer report of the example inputs' variant."""
        return self._primary.report

    def stages(self) -> list[str]:
        """The name of every stage of this compile, in pipeline order (``ir(name)`` returns each one's text).

        ``fx``, ``calibrate``, one per pass (the graph after it, annotated), ``lowered``, then the target's
        codegen stages: ``mlir``, ``llvm`` on the CPU; ``triton``, ``ttgir``, ``ptx`` on the GPU targets.
        """
        return list(stage_text.stage_names([name for name, _ in PASSES], get_target(self.target)))

    def ir(self, stage: str) -> str:
        """The text of one stage of the example inputs' variant; ``stages()`` lists them in order.

        Never empty: a stage with nothing in it (``"triton"`` when every layer stayed dense, ``"mlir"`` on a
        GPU target) says why. Raises ValueError for a name that is no stage of any target.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; known stages: {', '.join(self.stages())}")
        with self._lock:
            variant = self._primary
            stages = variant.ctx.stages
            if stage not in stages:  # codegen stages are built on first request (ptx compiles the kernels)
                stages[stage] = stage_text.codegen_stage_text(variant.module, stage, variant.ctx.target)
            return stages[stage]

    def dump(self, directory: str) -> list[str]:
        """Write every stage to ``directory/NN-stage.txt`` (NN: pipeline order); returns the paths written.

        A compile with the ``dump_dir`` option does this itself."""
        return stage_text.dump(directory, [(name, self.ir(name)) for name in self.stages()])

    @property
    def graph_module(self) -> torch.fx.GraphModule:
        """The lowered fx graph module of the example inputs' variant."""
        return self._primary.module


@contextlib.contextmanager
def _untouched(model: torch.nn.Module):
    """Leave the model's buffers and torch's RNG as they were while a train-mode graph is compiled: a pass
    that runs the graph (rows, on data-dependent layers) would otherwise update BatchNorm's running
    statistics and draw dropout masks, and the first real call would no longer match eager."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        with torch.no_grad():
            for b, value in buffers:
                if not torch.equal(b, value):
                    with torch.inference_mode(b.is_inference()):
                        b.copy_(value)


def _autocast_around(flat: list) -> bool:
    """True when torch.autocast is on for the device of any tensor input (the call would cast in eager)."""
    devices = {x.device.type for x in flat if isinstance(x, torch.Tensor)} or {"cpu"}
    return any(torch.is_autocast_enabled(d) for d in devices if d in ("cpu", "cuda", "xpu"))


def load(path, model: torch.nn.Module | None = None) -> CompiledModel:
    """``sparsec.load``: the CompiledModel saved at ``path``, frozen or bound to ``model`` (sparsec/compiler/artifact.py)."""
    from sparsec.compiler import artifact

    return CompiledModel(**artifact.load_args(path, model))


def from_bytes(files: dict[str, bytes], model: torch.nn.Module | None = None) -> CompiledModel:
    """A CompiledModel from ``artifact.to_bytes``'s files (unpickling, deepcopy). The files live on in memory:
    the model's tensors are not memory-mapped, and its program is deserialized from these bytes when needed."""
    from sparsec.compiler import artifact

    with artifact.unpacked(files) as root:
        cm = load(root, model=model)
        artifact.detach_from(cm, root, files)
        return cm
