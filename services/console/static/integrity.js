// casetrail audit console: checks, in this browser, that each event shown on the timeline is
// in its service's signed ledger checkpoint. Web Crypto only (SHA-256, Ed25519); no library.
//
// For each row: the event's canonical bytes (data-leaf, from audit's timeline answer) must hold
// what the row shows (event id, type, actor and role, both times: data-*) and be of the page's
// case (its subject, or for the client's own events its client); SHA-256(0x00 || bytes) is the
// leaf; the RFC 9162 inclusion proof
// from /ledger/proofs must lead from that leaf to the checkpoint's root; the checkpoint (a C2SP
// signed note) must carry that origin, size and root and a valid Ed25519 signature by the key
// audit publishes for that origin. Any failure shows the row as FAILED, in words.
"use strict";

(() => {
  const table = document.getElementById("timeline");
  const summary = document.getElementById("integrity-summary");
  if (!table || !summary) return;
  const rows = Array.from(table.querySelectorAll("tbody tr[data-event-id]"));
  const caseId = table.dataset.caseId;
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  class Failure extends Error {}

  const fromBase64 = (text) => {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes;
  };
  const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const equal = (a, b) => a.length === b.length && a.every((value, i) => value === b[i]);
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  };
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const leafHash = (leaf) => sha256(concat(Uint8Array.of(0), leaf));
  const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

  // The canonical bytes are netstrings: <length>:<bytes>, (casetrail_platform/ledger/canonical.py).
  const netstrings = (bytes) => {
    const fields = [];
    let at = 0;
    while (at < bytes.length) {
      const colon = bytes.indexOf(0x3a, at);
      if (colon < 0) throw new Failure("the event's bytes are not netstrings");
      const length = Number(decoder.decode(bytes.subarray(at, colon)));
      const end = colon + 1 + length;
      if (!Number.isSafeInteger(length) || end >= bytes.length || bytes[end] !== 0x2c) {
        throw new Failure("the event's bytes are not netstrings");
      }
      fields.push(decoder.decode(bytes.subarray(colon + 1, end)));
      at = end + 1;
    }
    return fields;
  };

  // RFC 9162 2.1.3.2, as casetrail_platform/ledger/merkle.py verify_inclusion.
  const rootFromProof = async (index, size, leaf, proof) => {
    if (!(index >= 0 && index < size)) throw new Failure("the leaf is not in the checkpoint's tree");
    let fn = BigInt(index);
    let sn = BigInt(size - 1);
    let node = leaf;
    for (const sibling of proof) {
      if (sn === 0n) throw new Failure("the inclusion proof is too long");
      if (fn & 1n || fn === sn) {
        node = await nodeHash(sibling, node);
        if (!(fn & 1n)) {
          while (fn && !(fn & 1n)) {
            fn >>= 1n;
            sn >>= 1n;
          }
        }
      } else {
        node = await nodeHash(node, sibling);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw new Failure("the inclusion proof is too short");
    return node;
  };

  // A verifier key: name+<key id, 8 hex>+base64(0x01 || Ed25519 public key).
  const parseKey = async (text) => {
    const first = text.indexOf("+");
    const second = text.indexOf("+", first + 1);
    if (first < 0 || second < 0) throw new Failure("the published key is malformed");
    const name = text.slice(0, first);
    const raw = fromBase64(text.slice(second + 1));
    if (raw.length !== 33 || raw[0] !== 1) throw new Failure("the published key is not Ed25519");
    const keyId = (await sha256(concat(encoder.encode(`${name}\n`), raw))).subarray(0, 4);
    if (toHex(keyId) !== text.slice(first + 1, second).toLowerCase()) {
      throw new Failure("the published key's id does not match it");
    }
    const key = await crypto.subtle.importKey("raw", raw.subarray(1), { name: "Ed25519" }, false, [
      "verify",
    ]);
    return { name, keyId, key };
  };

  // A C2SP signed note: body, blank line, "— <name> base64(key id || signature)" lines.
  const openNote = async (note, verifier) => {
    const split = note.lastIndexOf("\n\n");
    if (split <= 0 || !note.endsWith("\n")) throw new Failure("the checkpoint is not a signed note");
    const body = `${note.slice(0, split)}\n`;
    for (const line of note.slice(split + 2, -1).split("\n")) {
      const match = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!match || match[1] !== verifier.name) continue;
      const raw = fromBase64(match[2]);
      if (raw.length !== 68 || !equal(raw.subarray(0, 4), verifier.keyId)) continue;
      const good = await crypto.subtle.verify(
        { name: "Ed25519" },
        verifier.key,
        raw.subarray(4),
        encoder.encode(body),
      );
      if (!good) throw new Failure("the checkpoint's Ed25519 signature does not verify");
      const [origin, size, root] = body.split("\n");
      return { origin, size: Number(size), root: fromBase64(root) };
    }
    throw new Failure("the checkpoint carries no signature by the service's key");
  };

  // The case's client, as the bytes of the case's opening name it when this page shows it: the
  // client's own events (registration, corrections, holds, erasure) have the client as their
  // subject, and are the case's only when the client is. The opening's row is checked as any
  // other: bytes altered there fail it.
  const caseClient = (() => {
    for (const row of rows) {
      try {
        const fields = netstrings(fromBase64(row.dataset.leaf || ""));
        if (fields[5] === "casetrail.case.opened" && fields[14] === caseId) {
          return JSON.parse(fields[15]).client_id || null;
        }
      } catch (error) {
        // A malformed leaf fails its own row's check.
      }
    }
    return null;
  })();

  // What the row shows, against its bytes (canonical.py: times in microseconds since the
  // epoch): a row may not show another actor, time or case than the event verified.
  const bindToRow = (row, fields) => {
    const shown = row.dataset;
    if (fields[2] !== shown.eventId || fields[5] !== shown.eventType) {
      throw new Failure("the event's bytes are another event's");
    }
    if (fields[8] !== shown.actorId || fields[9] !== shown.actorRole) {
      throw new Failure("the actor shown is not the event's");
    }
    if (fields[12] !== shown.occurred || fields[13] !== shown.recorded) {
      throw new Failure("the times shown are not the event's");
    }
    if (fields[14] === caseId) return true;
    if (fields[3] !== `client-${fields[14]}`) throw new Failure("the event is not of this case");
    if (caseClient === null) return false;
    if (fields[14] !== caseClient) throw new Failure("the event is of another client than the case's");
    return true;
  };

  const verifiers = new Map();
  const notes = new Map();
  const verifierFor = (origin, keys) => {
    if (!verifiers.has(origin)) {
      if (!keys[origin]) return Promise.reject(new Failure("no published key for this log"));
      verifiers.set(origin, parseKey(keys[origin]));
    }
    return verifiers.get(origin);
  };
  const checkpointOf = async (checkpoint, keys) => {
    const verifier = await verifierFor(checkpoint.origin, keys);
    if (verifier.name !== checkpoint.origin) throw new Failure("the key is not the log's");
    if (!notes.has(checkpoint.signed_note)) {
      notes.set(checkpoint.signed_note, openNote(checkpoint.signed_note, verifier));
    }
    const signed = await notes.get(checkpoint.signed_note);
    if (
      signed.origin !== checkpoint.origin ||
      signed.size !== checkpoint.tree_size ||
      !equal(signed.root, fromBase64(checkpoint.root_hash))
    ) {
      throw new Failure("the checkpoint differs from the one its service signed");
    }
    return signed;
  };

  const check = async (row, found, keys) => {
    if (!found) throw new Failure("audit sent no proof for this event");
    if (found.problem === "pending") return null;
    if (found.problem === "mismatch") throw new Failure("the ledger does not hold this event");
    if (found.problem) throw new Failure("audit holds no ledger entry for this event");
    const leaf = fromBase64(row.dataset.leaf || "");
    const fields = netstrings(leaf);
    if (fields.length !== 16 || fields[0] !== "casetrail.ledger.v1") {
      throw new Failure("the event's bytes are not casetrail.ledger.v1");
    }
    const bound = bindToRow(row, fields);
    if (Number(fields[1]) !== found.position) throw new Failure("the proof is for another position");
    const signed = await checkpointOf(found.checkpoint, keys);
    const proof = found.proof.map(fromBase64);
    const root = await rootFromProof(found.position - 1, signed.size, await leafHash(leaf), proof);
    if (!equal(root, signed.root)) throw new Failure("the inclusion proof does not lead to the root");
    return { signed, bound };
  };

  const show = (row, kind, text) => {
    const cell = row.querySelector(".integrity-cell");
    const badge = document.createElement("span");
    badge.className = `badge ${kind}`;
    badge.textContent = text;
    cell.replaceChildren(badge);
  };

  const run = async () => {
    if (!rows.length) {
      summary.textContent = "No event shown, nothing to check.";
      return;
    }
    if (!window.isSecureContext || !crypto.subtle) {
      summary.textContent = "Not checked: this browser offers Web Crypto only over HTTPS.";
      return;
    }
    summary.textContent = `Checking ${rows.length} events in this browser…`;
    // A row shown in part (what is withheld from this reader) has no leaf to prove: said so.
    const partial = rows.filter((row) => row.dataset.shownInPart);
    const provable = rows.filter((row) => !row.dataset.shownInPart);
    for (const row of partial) {
      show(row, "withheld", "shown in part: what is withheld from you is not provable here");
    }
    const query = provable.map((row) => `event=${encodeURIComponent(row.dataset.eventId)}`).join("&");
    let answer;
    try {
      const response = await fetch(`${table.dataset.proofs}?${query}`, {
        credentials: "same-origin",
        headers: { accept: "application/json" },
      });
      if (!response.ok) throw new Error(String(response.status));
      answer = await response.json();
    } catch (error) {
      summary.textContent = "Not checked: the proofs could not be fetched. Reload to retry.";
      return;
    }
    const counts = { verified: 0, failed: 0, pending: 0, partial: partial.length, unbound: 0 };
    const checkpoints = new Map();
    await Promise.all(
      provable.map(async (row) => {
        try {
          const checked = await check(row, answer.proofs[row.dataset.eventId], answer.keys);
          if (checked === null) {
            counts.pending += 1;
            show(row, "pending", "not yet in a checkpoint (reload later)");
            return;
          }
          const { signed, bound } = checked;
          checkpoints.set(`${signed.origin} ${signed.size}`, signed);
          if (!bound) {
            counts.unbound += 1;
            show(
              row,
              "withheld",
              "in its log, but of the case's client only if the case's opening, not on this page, names it",
            );
            return;
          }
          counts.verified += 1;
          show(
            row,
            "verified",
            `✓ verified: in ${signed.origin}, size ${signed.size}, root ${toHex(signed.root).slice(0, 16)}…`,
          );
        } catch (error) {
          counts.failed += 1;
          const reason = error instanceof Failure ? error.message : "the check could not run";
          show(row, "failed", `✗ FAILED: ${reason}`);
        }
      }),
    );
    const list = document.getElementById("integrity-checkpoints");
    if (list) {
      list.replaceChildren(
        ...Array.from(checkpoints.values(), (signed) => {
          const item = document.createElement("li");
          item.textContent = `Checkpoint ${signed.origin}, size ${signed.size}, root ${toHex(signed.root)} (signature verified)`;
          return item;
        }),
      );
    }
    const parts = [`${counts.verified} of ${rows.length} events verified in this browser`];
    if (counts.failed) parts.push(`${counts.failed} FAILED`);
    if (counts.pending) parts.push(`${counts.pending} not yet in a checkpoint`);
    if (counts.partial) parts.push(`${counts.partial} shown in part, not provable here`);
    if (counts.unbound) parts.push(`${counts.unbound} of a client this page cannot tie to the case`);
    summary.textContent = `Integrity: ${parts.join("; ")}.`;
    summary.dataset.state = counts.failed
      ? "failed"
      : counts.pending
        ? "pending"
        : counts.partial || counts.unbound
          ? "partial"
          : "verified";
  };

  run();
})();
