"""One long-lived DeepSparse child that holds several compiled engines and runs them on request.

The deployment runner keeps its ONNX Runtime parts in-process and sends the DeepSparse parts
here. Tensors travel through memory-mapped files (in /dev/shm where it exists): the parent writes
a part's inputs into that part's input buffers, sends one line `RUN <key>`, and reads one line
back; the child copies the engine's outputs into the part's output buffers. The child compiles
every engine first and answers `READY <json>`; a crash, a timeout or an error (at compile or at run)
raises `DeepSparseFailed` with a one-line reason and the child is gone, never the parent. The
child's own stdout is sent to its stderr log, so DeepSparse's prints cannot break the protocol.
The child dies with its parent, and the shared-memory folder is removed on every exit path: by
`close()` (also on every failure), and when the parent is killed, by the child's watcher
(`child_watch`), even mid-compile.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from compress.evaluate.runtimes.child_watch import watch_parent
from compress.evaluate.runtimes.deepsparse import (_compile, _failure_reason, _signal_name,
                                          child_env, deepsparse_missing_reason)


class DeepSparseFailed(RuntimeError):
    """The DeepSparse child failed (missing package, crash, timeout, error); the text says why."""


@dataclass(frozen=True)
class EngineSpec:
    """One engine to compile: a file at fixed input shapes, and the shapes of its outputs."""

    key: str
    onnx_path: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]


def _buffer(folder: Path, key: str, kind: str, index: int, shape: Sequence[int],
            mode: str) -> np.memmap:
    name = f"{key.replace('/', '_')}.{kind}{index}.f32"
    return np.memmap(folder / name, dtype=np.float32, mode=mode, shape=tuple(shape))


def _shm_root() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class DeepSparseServer:
    """Parent side: start the child, compile `specs`, then `run(key, inputs)` -> outputs.

    Output arrays are views on the shared buffers, valid until that engine runs again.
    """

    def __init__(self, specs: Sequence[EngineSpec], *, num_cores: int | None = None,
                 compile_timeout_s: float = 900.0, run_timeout_s: float = 120.0) -> None:
        missing = deepsparse_missing_reason()
        if missing:
            raise DeepSparseFailed(missing)
        self.specs = {spec.key: spec for spec in specs}
        self.run_timeout_s = run_timeout_s
        self._tmp = tempfile.TemporaryDirectory(prefix="deepsparse_server_", dir=_shm_root())
        self.folder = Path(self._tmp.name)
        self.inputs = {s.key: [_buffer(self.folder, s.key, "in", i, shape, "w+")
                               for i, shape in enumerate(s.input_shapes)] for s in specs}
        self.outputs = {s.key: [_buffer(self.folder, s.key, "out", i, shape, "w+")
                                for i, shape in enumerate(s.output_shapes)] for s in specs}
        request = {"folder": str(self.folder), "num_cores": num_cores, "parent_pid": os.getpid(),
                   "specs": [{"key": s.key, "onnx_path": s.onnx_path,
                              "input_shapes": [list(x) for x in s.input_shapes],
                              "output_shapes": [list(x) for x in s.output_shapes]} for s in specs]}
        (self.folder / "request.json").write_text(json.dumps(request))
        self._log = open(self.folder / "child.log", "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "compress.evaluate.runtimes.deepsparse_server",
             str(self.folder / "request.json")], env=child_env(), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log)
        self.stage = "compile"
        self.info = json.loads(self._read_line(compile_timeout_s, "READY"))

    def run(self, key: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run engine `key` on `inputs` (shapes as compiled); its outputs (shared views)."""
        for buffer, array in zip(self.inputs[key], inputs):
            if buffer.shape != array.shape:
                raise DeepSparseFailed(f"{key}: input shape {array.shape} is not the compiled "
                                       f"{buffer.shape}")
            buffer[...] = array
        self.stage = f"run {key}"
        self._send(f"RUN {key}\n")
        self._read_line(self.run_timeout_s, "OK")
        return [np.asarray(out) for out in self.outputs[key]]

    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._fail()

    def _read_line(self, timeout_s: float, expect: str) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.close()
            raise DeepSparseFailed(f"{self.stage} timed out after {timeout_s:.0f} s (child killed)")
        line = self.proc.stdout.readline().decode("utf-8", errors="replace").strip()
        if not line.startswith(expect):
            self._fail(line)
        return line[len(expect):].strip()

    def _fail(self, line: str = "") -> None:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self._log.flush()
        output = (self.folder / "child.log").read_text(errors="replace")
        self.close()
        if code is not None and code < 0:
            reason = f"{self.stage} crashed ({_signal_name(-code)}, signal {-code})"
        elif line.startswith("ERROR"):
            reason = f"{self.stage} failed: {line[5:].strip()[:300]}"
        else:
            reason = _failure_reason(self.stage, code if code is not None else -1, output)
        raise DeepSparseFailed(reason)

    def close(self) -> None:
        """Stop the child (if alive) and remove the shared buffers; safe to call twice."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream and not stream.closed:
                stream.close()
        if not self._log.closed:
            self._log.close()
            self._tmp.cleanup()

    def __enter__(self) -> "DeepSparseServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ----------------------------------------------------------------------------- child side
def _serve(request: dict[str, Any], protocol: Any) -> None:
    folder = Path(request["folder"])
    engines, inputs, outputs, info = {}, {}, {}, {}
    for spec in request["specs"]:
        key, shapes = spec["key"], spec["input_shapes"]
        tick = time.perf_counter()
        workdir = folder / "compile" / key.replace("/", "_")  # the shape-overridden copy goes here
        workdir.mkdir(parents=True, exist_ok=True)
        engines[key] = _compile({"onnx_path": spec["onnx_path"], "input_shapes": shapes,
                                 "override_shapes": True, "batch_size": shapes[0][0],
                                 "num_cores": request.get("num_cores"),
                                 "result_path": str(workdir / "result.json")})
        info[key] = {"compile_s": time.perf_counter() - tick,
                     "supported_op_fraction": float(engines[key].fraction_of_supported_ops),
                     "cores": int(engines[key].num_cores)}
        inputs[key] = [_buffer(folder, key, "in", i, s, "r") for i, s in enumerate(shapes)]
        outputs[key] = [_buffer(folder, key, "out", i, s, "r+")
                        for i, s in enumerate(spec["output_shapes"])]
    protocol.write(f"READY {json.dumps(info)}\n")
    protocol.flush()
    for line in sys.stdin:
        key = line.split(maxsplit=1)[1].strip()
        results = engines[key].run([np.ascontiguousarray(a) for a in inputs[key]], val_inp=False)
        for buffer, result in zip(outputs[key], results):
            if buffer.shape != result.shape:
                raise ValueError(f"{key}: output shape {result.shape} is not {buffer.shape}")
            buffer[...] = result
        protocol.write("OK\n")
        protocol.flush()


def _child_main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by DeepSparse goes to the log, not the protocol
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    try:
        request = json.loads(Path(argv[0]).read_text())
        if "parent_pid" in request:  # killed with the parent, buffers removed (child_watch)
            watch_parent(int(request["parent_pid"]), request["folder"])
        _serve(request, protocol)
    except Exception as err:  # reported to the parent as one line, then exit non-zero
        protocol.write(f"ERROR {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}\n")
        protocol.flush()
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main())
