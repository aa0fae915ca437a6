// Draw-a-digit page for `mnist-onnx serve`: plain JavaScript, no dependencies, works offline.
//
// Three parts: predict() talks to the model (the only code that knows about the server, so an
// in-browser onnxruntime-web mode would replace just that function), Pad is the drawing surface,
// and the answer functions render what predict() returns.
"use strict";

(() => {
  // Relative, so the page also works behind a reverse proxy that mounts the server under a prefix.
  const PREDICT_URL = "v1/predict";
  // Wait this long after a stroke ends before asking, so a digit drawn in several strokes
  // is not sent after every one of them.
  const DEBOUNCE_MS = 250;
  // Pen width as a fraction of the canvas side: a felt pen on a 28x28 MNIST-sized grid
  // (MNIST strokes are about 2-3 of its 28 pixels wide).
  const PEN_WIDTH = 0.07;
  const INK = "#ffffff";
  const PAPER = "#000000";

  const $ = (id) => document.getElementById(id);
  const app = $("app");

  // ---------------------------------------------------------------------------------------
  // The model.

  class PredictError extends Error {}

  /**
   * Ask the model which digit an image shows.
   * @param {Blob} image  PNG (or any image type the server reads).
   * @param {AbortSignal} [signal]  Cancels the request when a newer drawing supersedes it.
   * @returns {Promise<{label: number, probabilities: number[], confidence: number,
   *   prepared: number[][], warnings: string[], modelName: string}>}
   * @throws {PredictError} with a message for people when the server refuses or is unreachable.
   */
  async function predict(image, signal) {
    let response;
    try {
      response = await fetch(PREDICT_URL, {
        method: "POST",
        headers: { "Content-Type": image.type || "application/octet-stream", Accept: "application/json" },
        body: image,
        signal,
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new PredictError("Cannot reach the server. Is mnist-onnx serve still running? " +
        "Reload the page once it is back.");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      if (err.name === "AbortError") throw err;
    }
    if (!response.ok) {
      const reason = body && typeof body.error === "string" ? body.error : response.statusText || "no reason given";
      throw new PredictError(`The server refused the image (HTTP ${response.status}): ${reason}`);
    }
    if (!body || !Array.isArray(body.labels) || !Array.isArray(body.probabilities)) {
      throw new PredictError("The server's answer was not the expected JSON (labels, probabilities).");
    }
    return {
      label: body.labels[0],
      probabilities: body.probabilities[0],
      confidence: Array.isArray(body.confidence) ? body.confidence[0] : Math.max(...body.probabilities[0]),
      prepared: Array.isArray(body.prepared) ? body.prepared[0] : null,
      warnings: Array.isArray(body.warnings) ? body.warnings : [],
      modelName: body.model_name || "",
    };
  }

  // ---------------------------------------------------------------------------------------
  // The drawing pad: strokes kept as point lists so that Undo can redraw without the last one.

  class Pad {
    constructor(canvas, onChange, onStrokeEnd) {
      this.canvas = canvas;
      this.ctx = canvas.getContext("2d");
      this.strokes = [];
      this.current = null;
      this.picture = null; // an uploaded image shown instead of strokes
      this.onChange = onChange;
      this.onStrokeEnd = onStrokeEnd;
      canvas.addEventListener("pointerdown", (e) => this.down(e));
      canvas.addEventListener("pointermove", (e) => this.move(e));
      canvas.addEventListener("pointerup", (e) => this.up(e));
      canvas.addEventListener("pointercancel", (e) => this.up(e));
      this.redraw();
    }

    get empty() {
      return this.strokes.length === 0 && this.picture === null;
    }

    point(e) {
      const box = this.canvas.getBoundingClientRect();
      return [(e.clientX - box.left) * (this.canvas.width / box.width),
        (e.clientY - box.top) * (this.canvas.height / box.height)];
    }

    down(e) {
      if (this.current) return; // a second finger while one is drawing
      if (e.button !== 0 && e.pointerType === "mouse") return;
      e.preventDefault();
      this.canvas.setPointerCapture(e.pointerId);
      if (this.picture) { this.picture = null; this.redraw(); }
      this.current = { id: e.pointerId, points: [this.point(e)] };
      this.strokes.push(this.current.points);
      this.drawStroke(this.current.points);
      this.onChange("drawing");
    }

    move(e) {
      if (!this.current || e.pointerId !== this.current.id) return;
      const coalesced = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
      const events = coalesced.length ? coalesced : [e];
      const points = this.current.points;
      for (const ev of events) points.push(this.point(ev));
      // Draw only the new segment; a full redraw per move would lag on phones.
      this.drawStroke(points.slice(-events.length - 1));
    }

    up(e) {
      if (!this.current || e.pointerId !== this.current.id) return;
      this.current = null;
      this.onStrokeEnd();
    }

    undo() {
      if (this.picture) this.picture = null;
      else this.strokes.pop();
      this.redraw();
    }

    clear() {
      this.strokes = [];
      this.picture = null;
      this.current = null;
      this.redraw();
    }

    showPicture(bitmap) {
      this.strokes = [];
      this.picture = bitmap;
      this.redraw();
    }

    redraw() {
      const { ctx, canvas } = this;
      ctx.fillStyle = PAPER;
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      if (this.picture) {
        const p = this.picture;
        const scale = Math.min(canvas.width / p.width, canvas.height / p.height);
        const w = p.width * scale, h = p.height * scale;
        ctx.imageSmoothingQuality = "high";
        ctx.drawImage(p, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
      }
      for (const stroke of this.strokes) this.drawStroke(stroke);
    }

    drawStroke(points) {
      const { ctx, canvas } = this;
      ctx.strokeStyle = INK;
      ctx.fillStyle = INK;
      ctx.lineWidth = canvas.width * PEN_WIDTH;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      if (points.length === 1) {
        ctx.beginPath();
        ctx.arc(points[0][0], points[0][1], ctx.lineWidth / 2, 0, 2 * Math.PI);
        ctx.fill();
        return;
      }
      ctx.beginPath();
      ctx.moveTo(points[0][0], points[0][1]);
      for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
      ctx.stroke();
    }

    toBlob() {
      return new Promise((resolve, reject) => {
        this.canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new PredictError("Cannot read the drawing."))),
          "image/png");
      });
    }
  }

  // ---------------------------------------------------------------------------------------
  // The answer.

  const chart = $("chart");
  const bars = [];
  for (let digit = 0; digit < 10; digit++) {
    const item = document.createElement("li");
    item.innerHTML = '<span class="label"></span><span class="pct">–</span>' +
      '<span class="bar" aria-hidden="true"><span class="fill"></span></span>';
    item.querySelector(".label").textContent = String(digit);
    chart.append(item);
    bars.push(item);
  }
  const prepared = $("prepared");
  const preparedCtx = prepared.getContext("2d");

  // "97.3%" in sentences; whole percentages under the narrow bars.
  function percent(p) {
    return p >= 0.995 || p < 0.005 ? `${Math.round(p * 100)}%` : `${(p * 100).toFixed(1)}%`;
  }
  function wholePercent(p) {
    return p >= 0.0005 && p < 0.005 ? "<1%" : `${Math.round(p * 100)}%`;
  }

  function setState(state) {
    app.dataset.state = state;
    $("undo").disabled = pad.empty;
    $("clear").disabled = pad.empty;
    $("canvas-hint").hidden = !pad.empty;
  }

  function showMessage(text) {
    const message = $("message");
    message.textContent = text;
    message.hidden = !text;
  }

  function showWarnings(warnings) {
    const list = $("warnings");
    list.replaceChildren(...warnings.map((w) => {
      const item = document.createElement("li");
      item.textContent = w;
      return item;
    }));
  }

  function resetAnswer() {
    $("digit").textContent = "?";
    $("summary").textContent = "Draw a digit to see what the model reads.";
    for (const item of bars) {
      item.classList.remove("top");
      item.style.setProperty("--p", 0);
      item.querySelector(".pct").textContent = "–";
    }
    preparedCtx.clearRect(0, 0, 28, 28);
    prepared.setAttribute("aria-label", "The 28 by 28 image the model received (nothing yet)");
    showWarnings([]);
    showMessage("");
  }

  function showAnswer(answer) {
    const { label, probabilities, confidence } = answer;
    $("digit").textContent = String(label);
    const order = probabilities.map((p, d) => [p, d]).sort((a, b) => b[0] - a[0]);
    let summary = `The model reads ${label} (${percent(confidence)} sure).`;
    if (confidence < 0.8 && order.length > 1) summary += ` Next most likely: ${order[1][1]} (${percent(order[1][0])}).`;
    $("summary").textContent = summary;
    $("model").textContent = answer.modelName ? `Model: ${answer.modelName}` : "";
    probabilities.forEach((p, d) => {
      const item = bars[d];
      if (!item) return;
      item.classList.toggle("top", d === label);
      item.style.setProperty("--p", p);
      item.querySelector(".pct").textContent = wholePercent(p);
    });
    if (answer.prepared) {
      const pixels = preparedCtx.createImageData(28, 28);
      answer.prepared.flat().forEach((v, i) => {
        pixels.data.set([v, v, v, 255], i * 4);
      });
      preparedCtx.putImageData(pixels, 0, 0);
      prepared.setAttribute("aria-label", `The 28 by 28 image the model received, read as ${label}`);
    }
    showWarnings(answer.warnings);
    showMessage("");
  }

  function showError(text) {
    resetAnswer(); // the bars and image of an earlier drawing would read as this one's
    $("digit").textContent = "!";
    $("summary").textContent = "No answer.";
    showMessage(text);
  }

  // ---------------------------------------------------------------------------------------
  // Wiring: debounce, cancel superseded requests, keyboard shortcuts, upload and drop.

  let timer = 0;
  let inFlight = null;

  async function ask(getImage) {
    clearTimeout(timer);
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    setState("pending");
    try {
      const answer = await predict(await getImage(), controller.signal);
      if (controller.signal.aborted) return;
      showAnswer(answer);
      setState("shown");
    } catch (err) {
      if (err.name === "AbortError" || controller.signal.aborted) return;
      showError(err instanceof PredictError ? err.message : `Unexpected error: ${err.message}`);
      setState("error");
    } finally {
      if (inFlight === controller) inFlight = null;
    }
  }

  function askSoon() {
    clearTimeout(timer);
    if (inFlight) { inFlight.abort(); inFlight = null; }
    if (pad.empty) { resetAnswer(); setState("empty"); return; }
    setState("pending");
    timer = setTimeout(() => ask(() => pad.toBlob()), DEBOUNCE_MS);
  }

  const pad = new Pad($("pad"), (state) => {
    // A new stroke supersedes any answer still on its way for the drawing without it.
    clearTimeout(timer);
    if (inFlight) { inFlight.abort(); inFlight = null; }
    setState(state);
  }, askSoon);

  function undo() { pad.undo(); askSoon(); }
  function clear() { pad.clear(); askSoon(); }

  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clear);
  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented) return;
    if ((e.ctrlKey || e.metaKey) && !e.shiftKey && !e.altKey && e.key.toLowerCase() === "z") {
      e.preventDefault();
      undo();
    } else if (e.key === "Escape" && !pad.empty) {
      e.preventDefault();
      clear();
    }
  });

  async function readFile(file) {
    if (!file) return;
    clearTimeout(timer);
    if (inFlight) { inFlight.abort(); inFlight = null; }
    setState("pending");
    if (file.type && !file.type.startsWith("image/")) {
      showError(`${file.name} is not an image (${file.type}). Choose a PNG, JPEG or other picture of one digit.`);
      setState("error");
      return;
    }
    // Show the picture when the browser can decode it; the server reads the file itself either way.
    try {
      pad.showPicture(await createImageBitmap(file));
    } catch (err) {
      pad.clear();
    }
    ask(async () => file);
  }

  $("file").addEventListener("change", (e) => {
    readFile(e.target.files[0]);
    e.target.value = ""; // choosing the same file again reads it again
  });

  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("dropping");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dropping"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dropping");
    readFile(e.dataTransfer && e.dataTransfer.files[0]);
  });

  resetAnswer();
  setState("empty");
})();
