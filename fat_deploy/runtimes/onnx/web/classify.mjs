// The bundle's web page: loads the .onnx with onnxruntime-web (shipped beside this file, never from a CDN),
// preprocesses a picked photo as the model's manifest says (canvas resampling), and shows the top 5.
// Query parameters: model=FILE.onnx (default: the first in models.json), ep=webgpu (WebGPU where the browser has
// it, else WebAssembly), image=URL and runs=N (classify that image at once and put the result, timings and the
// input tensor as JSON into #result), report=URL (also POST that JSON there: what fat-deploy's browser test reads).
import * as ort from "./ort.min.mjs";

const params = new URLSearchParams(location.search);
ort.env.wasm.wasmPaths = new URL("./", import.meta.url).href;
ort.env.wasm.numThreads = 1;  // threaded WebAssembly needs cross-origin isolation (COOP/COEP headers)

const status = document.getElementById("status");

function softmax(logits) {
  const top = Math.max(...logits), exps = logits.map((v) => Math.exp(v - top));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

function toTensor(image, pre) {  // browsers apply EXIF orientation when drawing an <img>
  const size = pre.center_crop[0], crop = pre.crop_fraction, mean = pre.mean, std = pre.std;
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const side = Math.min(image.naturalWidth, image.naturalHeight) * crop;
  context.drawImage(image, (image.naturalWidth - side) / 2, (image.naturalHeight - side) / 2, side, side,
                    0, 0, size, size);
  const { data } = context.getImageData(0, 0, size, size), plane = size * size;
  const chw = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++)
    for (let c = 0; c < 3; c++) chw[c * plane + i] = (data[4 * i + c] / 255 - mean[c]) / std[c];
  return chw;
}

function base64(floats) {
  const bytes = new Uint8Array(floats.buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

async function loadImage(source) {
  const image = document.getElementById("preview");
  image.src = source;
  await image.decode();
  image.hidden = false;
  return image;
}

async function main() {
  const models = await (await fetch("models.json")).json();
  const file = params.get("model") || models[0].file;
  const entry = models.find((m) => m.file === file);
  if (!entry) throw new Error(`${file} is not in models.json`);
  const manifest = await (await fetch(entry.manifest)).json();
  const labels = manifest.labels.names || (await (await fetch("labels.txt")).text()).trim().split("\n");
  const adapter = navigator.gpu ? await navigator.gpu.requestAdapter().catch(() => null) : null;
  const ep = params.get("ep") === "webgpu" && adapter ? "webgpu" : "wasm";
  let started = performance.now();
  const session = await ort.InferenceSession.create(file, { executionProviders: [ep] });
  const loadMs = performance.now() - started;
  status.textContent = `${file} loaded in ${loadMs.toFixed(0)} ms (${ep})`;

  async function classify(image, runs) {
    const chw = toTensor(image, manifest.preprocessing);
    const size = manifest.preprocessing.center_crop;
    const feeds = { [manifest.input.name]: new ort.Tensor("float32", chw, [1, 3, size[0], size[1]]) };
    started = performance.now();
    const output = (await session.run(feeds))[manifest.output.name];
    const firstMs = performance.now() - started;
    const steady = [];
    for (let i = 0; i < runs; i++) {
      started = performance.now();
      await session.run(feeds);
      steady.push(performance.now() - started);
    }
    steady.sort((a, b) => a - b);
    const logits = Array.from(output.data), probabilities = softmax(logits);
    const top5 = probabilities.map((p, index) => ({ index, label: labels[index], probability: p }))
      .sort((a, b) => b.probability - a.probability).slice(0, 5);
    const list = document.getElementById("top5");
    list.replaceChildren(...top5.map((t) => {
      const item = document.createElement("li");
      item.textContent = `${t.label} `;
      const share = document.createElement("span");
      share.textContent = `${(100 * t.probability).toFixed(1)}%`;
      item.append(share);
      return item;
    }));
    return { ep, loadMs, firstMs, steadyMs: steady.length ? steady[Math.floor(steady.length / 2)] : null,
             top5, logits, input: base64(chw), webgpuAdapter: Boolean(adapter) };
  }

  const picker = document.getElementById("picker");
  picker.disabled = false;
  picker.addEventListener("change", async () => {
    if (!picker.files.length) return;
    const result = await classify(await loadImage(URL.createObjectURL(picker.files[0])), 0);
    status.textContent = `${file} (${ep}): ${result.firstMs.toFixed(0)} ms`;
  });
  if (params.has("image")) {
    const result = await classify(await loadImage(params.get("image")), Number(params.get("runs") || 0));
    show(result);
  }
}

function show(result) {
  const pre = document.getElementById("result");
  pre.textContent = JSON.stringify(result);
  pre.hidden = false;
  if (params.has("report")) fetch(params.get("report"), { method: "POST", body: pre.textContent });
}

main().catch((error) => {
  status.textContent = `error: ${error.message}`;
  show({ error: String(error.message || error) });
});
