// The WorkerConsole view: an xterm.js terminal fed by the kernel-side model.
// `Terminal` and `FitAddon` are defined before this code (the vendored xterm.js bundles,
// joined in by mas_jupyter/kernel/widgets/console.py). The kernel relays the worker's
// channel: it sends {type: "stdout" | "replay" | "reset"} messages here, and takes
// {type: "hello" | "stdin" | "resize"} back. Output is only ever written to the terminal,
// never into the DOM as HTML; the status bar uses textContent.

function render({ model, el }) {
  const box = document.createElement("div");
  box.className = "mas-console";
  const bar = document.createElement("div");
  bar.className = "mas-console-bar";
  const screen = document.createElement("div");
  screen.className = "mas-console-screen";
  box.append(bar, screen);
  el.append(box);

  const term = new Terminal({
    cols: model.get("cols"),
    rows: model.get("rows"),
    cursorBlink: true,
    scrollback: 5000,
    fontSize: 13,
    fontFamily: "Menlo, 'DejaVu Sans Mono', Consolas, monospace",
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(screen);

  const showBar = () => {
    const activity = model.get("activity");
    bar.textContent = `${model.get("title")} · ${model.get("status")} · ${activity}`;
    bar.dataset.activity = activity;
    box.dataset.status = model.get("status");
  };
  showBar();
  model.on("change:status", showBar);
  model.on("change:activity", showBar);
  model.on("change:title", showBar);

  const onMessage = (msg) => {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "stdout") term.write(msg.data);
    else if (msg.type === "replay") { term.reset(); term.write(msg.data); }
    else if (msg.type === "reset") term.reset();
  };
  model.on("msg:custom", onMessage);
  // The kernel may handle comm messages concurrently (ipykernel 7 does while a cell runs),
  // so keystrokes carry this view's id and a sequence number to be put back in order.
  const view = Math.random().toString(36).slice(2);
  let seq = 0;
  const typing = term.onData((data) => model.send({ type: "stdin", data, view, seq: seq++ }));

  // Follow the output area's width: the worker gets as many columns as fit.
  let last = "";
  const refit = () => {
    let dims;
    try { dims = fit.proposeDimensions(); } catch (e) { return; }
    if (!dims || !Number.isFinite(dims.cols) || dims.cols < 20) return;
    const rows = model.get("rows");
    const key = `${dims.cols}x${rows}`;
    if (key === last) return;
    last = key;
    term.resize(dims.cols, rows);
    model.send({ type: "resize", cols: dims.cols, rows });
  };
  const observer = new ResizeObserver(() => refit());
  observer.observe(screen);
  requestAnimationFrame(refit);
  model.send({ type: "hello" });

  return () => {
    observer.disconnect();
    typing.dispose();
    model.off("msg:custom", onMessage);
    term.dispose();
  };
}

export default { render };
