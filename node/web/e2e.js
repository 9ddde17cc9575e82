// Atoll's client-side encryption, as the Go package e2e defines it: the
// sealed file format (STREAM over AES-256-GCM in 64 KiB segments) and the
// envelope of a share link (AES-256-GCM under HKDF-SHA256 of the link key,
// bound to the link and the blob). Tests hold the two implementations to
// each other.
"use strict";

const E2E = (() => {
  const SEG = 65536, TAG = 16, HDR = 16;
  const CONTEXT = "atoll e2e v1 link envelope";
  const enc = new TextEncoder(), dec = new TextDecoder();
  const header = new Uint8Array(HDR);
  header.set(enc.encode("ATOLLE2E"));
  header[8] = 1;
  header[9] = 16;

  const segments = (n) => Math.max(1, Math.ceil(n / SEG));
  const sealedSize = (n) => HDR + n + segments(n) * TAG;
  // The length of sealed segment i of a file of n bytes.
  const sealedSegment = (i, n) => (i < segments(n) - 1 ? SEG : n - (segments(n) - 1) * SEG) + TAG;

  function nonce(i, final) {
    const n = new Uint8Array(12);
    new DataView(n.buffer).setBigUint64(0, BigInt(i));
    if (final) n[11] = 1;
    return n;
  }

  function b64url(bytes) {
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function fromB64url(s) {
    if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new Error("not base64url");
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  }
  const b64 = (bytes) => { let s = ""; for (const b of bytes) s += String.fromCharCode(b); return btoa(s); };
  const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

  const random = (n) => crypto.getRandomValues(new Uint8Array(n));
  const aesKey = (raw, usage) => crypto.subtle.importKey("raw", raw, "AES-GCM", false, [usage]);

  class Tampered extends Error {
    constructor(what) { super("the file is damaged, altered or not for this key (" + what + ")"); }
  }

  // seal encrypts file (a Blob) under fileKey; onProgress(done, total)
  // follows the plaintext. It returns the sealed form as a Blob.
  async function seal(file, fileKey, onProgress) {
    const key = await aesKey(fileKey, "encrypt");
    const n = file.size, count = segments(n), parts = [header];
    const STEP = 64 * SEG; // read 4 MiB at a time
    for (let at = 0; at < Math.max(n, 1); at += STEP) {
      const plain = new Uint8Array(await file.slice(at, Math.min(n, at + STEP)).arrayBuffer());
      const pending = []; // the segments of one read are encrypted concurrently
      for (let off = 0; off < Math.max(plain.length, 1); off += SEG) {
        const i = (at + off) / SEG;
        pending.push(crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce(i, i === count - 1), additionalData: header },
          key, plain.subarray(off, Math.min(plain.length, off + SEG))));
      }
      for (const ct of await Promise.all(pending)) parts.push(new Uint8Array(ct));
      onProgress(Math.min(n, at + STEP), n);
    }
    return new Blob(parts, { type: "application/octet-stream" });
  }

  // Opener authenticates a sealed stream of a file of size bytes as it
  // arrives (push), returning plaintext segments; finish() fails unless
  // the whole file arrived.
  class Opener {
    constructor(key, size) {
      this.key = key; this.size = size; this.i = 0; this.count = segments(size);
      this.buf = new Uint8Array(0); this.seenHeader = false;
    }
    static async create(fileKey, size) { return new Opener(await aesKey(fileKey, "decrypt"), size); }
    async push(chunk) {
      const b = new Uint8Array(this.buf.length + chunk.length);
      b.set(this.buf); b.set(chunk, this.buf.length);
      this.buf = b;
      const out = [];
      if (!this.seenHeader) {
        if (this.buf.length < HDR) return out;
        if (!this.buf.subarray(0, HDR).every((v, j) => v === header[j])) throw new Tampered("header");
        this.buf = this.buf.subarray(HDR); this.seenHeader = true;
      }
      while (this.i < this.count && this.buf.length >= sealedSegment(this.i, this.size)) {
        const len = sealedSegment(this.i, this.size);
        let pt;
        try {
          pt = await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce(this.i, this.i === this.count - 1), additionalData: header },
            this.key, this.buf.subarray(0, len));
        } catch (e) { throw new Tampered("segment " + this.i); }
        out.push(new Uint8Array(pt));
        this.buf = this.buf.subarray(len); this.i++;
      }
      if (this.i === this.count && this.buf.length > 0) throw new Tampered("bytes after the end");
      return out;
    }
    finish() { if (!this.seenHeader || this.i !== this.count || this.buf.length) throw new Tampered("cut short"); }
  }

  async function envelopeKey(linkKey, linkID, usage) {
    const base = await crypto.subtle.importKey("raw", linkKey, "HKDF", false, ["deriveKey"]);
    return crypto.subtle.deriveKey({ name: "HKDF", hash: "SHA-256", salt: enc.encode(linkID), info: enc.encode(CONTEXT) },
      base, { name: "AES-GCM", length: 256 }, false, [usage]);
  }
  const envelopeAAD = (linkID, blobID) => enc.encode(CONTEXT + "\0" + linkID + "\0" + blobID);

  async function sealEnvelope(linkKey, linkID, blobID, env) {
    const key = await envelopeKey(linkKey, linkID, "encrypt");
    const iv = random(12);
    const plain = enc.encode(JSON.stringify({ key: b64url(env.key), name: env.name, size: env.size, type: env.type || "" }));
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: envelopeAAD(linkID, blobID) }, key, plain));
    const out = new Uint8Array(12 + ct.length);
    out.set(iv); out.set(ct, 12);
    return out;
  }

  async function openEnvelope(linkKey, linkID, blobID, sealed) {
    if (sealed.length < 28) throw new Tampered("envelope");
    const key = await envelopeKey(linkKey, linkID, "decrypt");
    let plain;
    try {
      plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.subarray(0, 12), additionalData: envelopeAAD(linkID, blobID) },
        key, sealed.subarray(12));
    } catch (e) { throw new Tampered("envelope"); }
    const env = JSON.parse(dec.decode(plain));
    const fileKey = fromB64url(env.key);
    if (fileKey.length !== 32 || !Number.isSafeInteger(env.size) || env.size < 0) throw new Tampered("envelope");
    return { key: fileKey, name: String(env.name || ""), size: env.size, type: String(env.type || "") };
  }

  const newLinkID = () => b64url(random(16));
  const newKey = () => random(32);

  return { seal, Opener, sealEnvelope, openEnvelope, sealedSize, newLinkID, newKey, b64url, fromB64url, b64, fromB64, Tampered };
})();
