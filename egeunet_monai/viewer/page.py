# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The viewer's single page: plain HTML, CSS and a little JavaScript, no build step and nothing fetched from
elsewhere (it works offline)."""

from __future__ import annotations

__all__ = ["render_page"]

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>EGE-UNet lesion segmentation</title>
<style>
  :root { --accent: #c62828; --ink: #1f2933; --muted: #616e7c; --line: #d9dee3; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
         background: #f5f7f9; }
  header { background: #fff; border-bottom: 1px solid var(--line); padding: 14px 28px; }
  header h1 { margin: 0; font-size: 20px; }
  header p { margin: 2px 0 0; color: var(--muted); font-size: 13px; }
  main { max-width: 1100px; margin: 0 auto; padding: 20px 28px 40px; }
  #drop { display: block; border: 2px dashed #9aa5b1; border-radius: 10px; background: #fff; padding: 22px;
          text-align: center; cursor: pointer; }
  #drop.over { border-color: var(--accent); background: #fff5f5; }
  #drop strong { color: var(--accent); }
  #drop small { display: block; color: var(--muted); margin-top: 4px; }
  #file { display: none; }
  #status { margin: 12px 0 0; color: var(--muted); min-height: 1.5em; }
  #error { margin: 12px 0 0; padding: 10px 14px; border-radius: 8px; background: #fdecea; color: #8a1c13;
           border: 1px solid #f5c2bd; }
  #result { display: grid; grid-template-columns: minmax(0, 3fr) minmax(240px, 1fr); gap: 22px; margin-top: 18px; }
  figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 10px; }
  figure img { display: block; width: 100%; height: auto; border-radius: 6px; background: #000; }
  figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
  aside { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 16px; align-self: start; }
  aside h2 { font-size: 16px; margin: 0 0 10px; word-break: break-all; }
  dl { margin: 0; }
  dt { color: var(--muted); font-size: 13px; margin-top: 10px; }
  dd { margin: 0; font-size: 18px; font-weight: 600; }
  dd small { font-weight: 400; color: var(--muted); font-size: 13px; }
  #flags.flagged { color: var(--accent); }
  label.toggle { display: flex; gap: 8px; align-items: center; margin-top: 16px; cursor: pointer; }
  a.button { display: inline-block; margin-top: 16px; padding: 8px 14px; border-radius: 8px;
             background: var(--accent); color: #fff; text-decoration: none; font-weight: 600; }
  footer { color: var(--muted); font-size: 12px; margin-top: 28px; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header>
  <h1>EGE-UNet skin-lesion segmentation</h1>
  <p>Upload a dermoscopy photograph to see the lesion the model finds. Research use only: not a medical device.</p>
</header>
<main>
  <label id="drop" for="file">
    <strong>Choose a photograph</strong> or drop it here
    <small>JPEG or PNG, up to __LIMIT_TEXT__. Segmented by the local egeunet-monai server: nothing leaves it.</small>
  </label>
  <input id="file" type="file" accept="image/jpeg,image/png">
  <p id="status" role="status" aria-live="polite"></p>
  <div id="error" role="alert" hidden></div>

  <section id="result" hidden>
    <figure>
      <img id="overlay" alt="The photograph with the predicted lesion outlined in red">
      <img id="mask" alt="The predicted lesion mask: white is lesion" hidden>
      <figcaption id="caption">Red line: the predicted lesion boundary.</figcaption>
    </figure>
    <aside>
      <h2 id="name"></h2>
      <dl>
        <dt>Lesion area</dt>
        <dd><span id="area-px"></span> px <small>(<span id="area-pct"></span> % of the image)</small></dd>
        <dt>Image size</dt>
        <dd><span id="size"></span> <small>pixels</small></dd>
        <dt>Mean confidence</dt>
        <dd><span id="confidence"></span> <small>mean probability inside the lesion</small></dd>
        <dt id="uncertainty-label">Uncertainty</dt>
        <dd id="uncertainty-row"><span id="uncertainty"></span>
          <small>disagreement of the 8 flipped and rotated views, 0 to 1 (above 0.5: low confidence)</small></dd>
        <dt>Quality flags</dt>
        <dd><span id="flags"></span></dd>
      </dl>
      <label class="toggle"><input id="show-mask" type="checkbox"> Show the mask instead of the outline</label>
      <a id="download" class="button" href="#" download>Download mask PNG</a>
    </aside>
  </section>
  <footer>EGE-UNet (Ruan et al., MICCAI 2023) in MONAI.
    The mask is at the photograph's own size: white is lesion.</footer>
</main>
<script>
"use strict";
const MAX_BYTES = __MAX_BYTES__;
const LIMIT_TEXT = "__LIMIT_TEXT__";
const $ = (id) => document.getElementById(id);
const fmt = (n, digits) => n.toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits});

function showError(message) {
  $("status").textContent = "";
  $("error").textContent = message;
  $("error").hidden = false;
}

function showResult(r) {
  $("name").textContent = r.filename;
  $("area-px").textContent = fmt(r.area_px, 0);
  $("area-px").dataset.value = r.area_px;
  $("area-pct").textContent = fmt(100 * r.area_fraction, 2);
  $("area-pct").dataset.value = r.area_fraction;
  $("size").textContent = r.width + " \\u00d7 " + r.height;
  $("confidence").textContent =
    r.mean_confidence === null ? "\\u2014 (no lesion found)" : fmt(r.mean_confidence, 3);
  // the uncertainty exists only when the server runs with --tta
  const tta = r.uncertainty !== null;
  $("uncertainty-label").hidden = $("uncertainty-row").hidden = !tta;
  $("uncertainty").textContent = tta ? fmt(r.uncertainty, 3) : "";
  $("uncertainty").dataset.value = tta ? r.uncertainty : "";
  $("flags").textContent = r.flags.length ? r.flags.join(", ") : "none";
  $("flags").dataset.value = r.flags.join(";");
  $("flags").classList.toggle("flagged", r.flags.length > 0);
  $("overlay").src = r.overlay_url;
  $("mask").src = r.mask_url;
  $("download").href = r.mask_url + "?download=1";
  $("download").setAttribute("download", r.download_name);
  $("show-mask").checked = false;
  toggleMask();
  $("result").dataset.id = r.id;
  $("result").hidden = false;
  $("status").textContent = "Done: " + r.filename + ".";
}

function toggleMask() {
  const mask = $("show-mask").checked;
  $("mask").hidden = !mask;
  $("overlay").hidden = mask;
  $("caption").textContent = mask ? "The predicted mask: white is lesion." : "Red line: the predicted lesion boundary.";
}

async function upload(file) {
  $("error").hidden = true;
  $("result").hidden = true;
  if (file.size > MAX_BYTES) {
    showError(file.name + " is larger than the " + LIMIT_TEXT + " limit: please upload a smaller photograph.");
    return;
  }
  $("status").textContent = "Segmenting " + file.name + "\\u2026";
  let response, body;
  try {
    response = await fetch("/api/segment", {
      method: "POST",
      body: file,
      headers: {
        "Content-Type": file.type || "application/octet-stream",
        "X-File-Name": encodeURIComponent(file.name),
      },
    });
  } catch (err) {
    showError("The server could not be reached (" + err.message + "). Is egeunet-monai serve still running?");
    return;
  }
  try {
    body = await response.json();
  } catch (err) {
    body = {error: "The server answered " + response.status + " " + response.statusText + "."};
  }
  if (!response.ok) {
    showError(body.error || ("The server answered " + response.status + "."));
    return;
  }
  showResult(body);
}

$("file").addEventListener("change", (e) => {
  if (e.target.files.length) upload(e.target.files[0]);
  e.target.value = "";
});
$("show-mask").addEventListener("change", toggleMask);
const drop = $("drop");
for (const t of ["dragenter", "dragover"]) {
  drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const t of ["dragleave", "drop"]) {
  drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]); });
</script>
</body>
</html>
"""


def render_page(max_upload_bytes: int) -> str:
    """The page, with the upload limit filled in (the page checks it before uploading; the server checks again)."""
    limit_text = f"{max_upload_bytes / (1024 * 1024):g} MB"
    return _PAGE.replace("__MAX_BYTES__", str(int(max_upload_bytes))).replace("__LIMIT_TEXT__", limit_text)
