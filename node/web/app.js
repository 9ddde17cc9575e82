// The share page: encrypt a file here, upload it, show its link; or open
// a link (/f/ID#KEY), download, decrypt and verify it here, then save it.
"use strict";

const $ = (s) => document.querySelector(s);

function status(text, kind) {
  const s = $("#status");
  s.textContent = text;
  s.className = kind || "";
}

function progress(phase, fraction) {
  $("#progressbox").hidden = false;
  $("#phase").textContent = phase + " — " + Math.floor(fraction * 100) + " %";
  $("#progress").value = fraction;
}

const human = (n) => {
  const u = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
};

function auth() {
  const k = localStorage.getItem("atoll.key");
  return k ? { Authorization: "Bearer " + k } : {};
}

async function apiError(resp) {
  try {
    const e = await resp.json();
    return new Error(e.message || resp.statusText);
  } catch (_) {
    return new Error(resp.status + " " + resp.statusText);
  }
}

// upload sends body with progress events (fetch reports none for uploads).
function upload(url, body, onProgress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open("POST", url);
    for (const [k, v] of Object.entries(auth())) x.setRequestHeader(k, v);
    x.setRequestHeader("Content-Type", "application/octet-stream");
    x.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded, e.total);
    x.onerror = () => reject(new Error("the upload failed (network)"));
    x.onload = () => {
      let r = {};
      try { r = JSON.parse(x.responseText); } catch (_) {}
      if (x.status === 201 || x.status === 200) resolve(r);
      else reject(new Error(r.message || "upload refused: " + x.status));
    };
    x.send(body);
  });
}

async function share(file) {
  $("#result").hidden = true;
  status("");
  const started = performance.now();
  const fileKey = E2E.newKey();
  const sealed = await E2E.seal(file, fileKey, (d, t) => progress("Encrypting", t ? d / t : 1));
  const sent = performance.now();
  const put = await upload("/v1/blobs", sealed, (d, t) => progress("Uploading", d / t));
  if (put.size !== sealed.size) throw new Error("the cluster stored " + put.size + " bytes of " + sealed.size);
  const linkID = E2E.newLinkID(), linkKey = E2E.newKey();
  const env = await E2E.sealEnvelope(linkKey, linkID, put.id, { key: fileKey, name: file.name, size: file.size, type: file.type });
  const req = { id: linkID, blob: put.id, sealed: E2E.b64(env) };
  const ttl = Number($("#expires").value);
  if (ttl > 0) req.expires = new Date(Date.now() + ttl * 1000).toISOString();
  const r = await fetch("/v1/links", { method: "POST", headers: { ...auth(), "Content-Type": "application/json" }, body: JSON.stringify(req) });
  if (!r.ok) throw await apiError(r);
  const done = performance.now();
  $("#link").value = location.origin + "/f/" + linkID + "#" + E2E.b64url(linkKey);
  $("#result").hidden = false;
  progress("Done", 1);
  const secs = (done - started) / 1000;
  status(file.name + " (" + human(file.size) + ") encrypted and stored in " + secs.toFixed(1) + " s (upload " +
    (sealed.size / 1048576 / ((done - sent) / 1000)).toFixed(1) + " MiB/s).", "ok");
  document.body.dataset.uploadSeconds = secs;
  document.body.dataset.encryptSeconds = (sent - started) / 1000;
}

function safeName(name) {
  const base = name.replace(/\\/g, "/").split("/").pop();
  return !base || base.startsWith(".") ? "download" : base;
}

async function openLink() {
  $("#download").hidden = false;
  const id = decodeURIComponent(location.pathname.slice("/f/".length));
  let linkKey;
  try {
    linkKey = E2E.fromB64url(location.hash.slice(1));
  } catch (_) {}
  if (!linkKey || linkKey.length !== 32) throw new Error("this link has no key, or a damaged one (the part after #)");
  const r = await fetch("/v1/links/" + encodeURIComponent(id), { cache: "no-store" });
  if (!r.ok) throw await apiError(r);
  const rec = await r.json();
  const env = await E2E.openEnvelope(linkKey, id, rec.blob, E2E.fromB64(rec.sealed));
  if (E2E.sealedSize(env.size) !== rec.size) throw new E2E.Tampered("size");
  $("#filename").textContent = env.name || "(no name)";
  $("#filesize").textContent = human(env.size) + (rec.expires ? " · link expires " + new Date(rec.expires).toLocaleString() : "");
  const save = $("#save");
  save.disabled = false;
  save.onclick = () => { save.disabled = true; download(id, rec, env).catch(fail); };
}

async function download(id, rec, env) {
  status("");
  const started = performance.now();
  const resp = await fetch("/v1/links/" + encodeURIComponent(id) + "/content", { cache: "no-store" });
  if (!resp.ok) throw await apiError(resp);
  const opener = await E2E.Opener.create(env.key, env.size);
  const reader = resp.body.getReader();
  const parts = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    got += value.length;
    parts.push(...(await opener.push(value)));
    progress("Downloading and decrypting", got / rec.size);
  }
  opener.finish(); // every byte authenticated: only now is anything saved
  const file = new Blob(parts, { type: env.type || "application/octet-stream" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(file);
  a.download = safeName(env.name);
  document.body.append(a);
  a.click();
  const secs = (performance.now() - started) / 1000;
  progress("Done", 1);
  status("Decrypted and verified: " + a.download + " (" + human(env.size) + ") in " + secs.toFixed(1) + " s.", "ok");
  document.body.dataset.downloadSeconds = secs;
  document.body.dataset.verified = "true";
}

function fail(err) {
  status(err instanceof E2E.Tampered ? "Refused: " + err.message + "." : "Error: " + err.message, "error");
}

function setupUpload() {
  $("#upload").hidden = false;
  const k = localStorage.getItem("atoll.key");
  if (k) $("#accesskey").value = k.split(":")[0];
  else $("#keybox").open = true;
  $("#keyform").onsubmit = (e) => {
    e.preventDefault();
    localStorage.setItem("atoll.key", $("#accesskey").value.trim() + ":" + $("#secretkey").value.trim());
    $("#secretkey").value = "";
    $("#keybox").open = false;
    status("Access key saved in this browser.", "ok");
  };
  const drop = $("#drop");
  const go = (file) => file && share(file).catch(fail);
  $("#file").onchange = (e) => go(e.target.files[0]);
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); go(e.dataTransfer.files[0]); };
  $("#copy").onclick = () => navigator.clipboard.writeText($("#link").value);
}

if (location.pathname.startsWith("/f/")) openLink().catch(fail);
else setupUpload();
