// A second, independent checker of aqe inclusion proofs (docs/audit-proof-format.md),
// in plain Node.js with no packages: node verify_proof.mjs PROOF.jsonl PUBKEY_BASE64
// Prints one line per proof ("ok <stream> <seq>" or "FAILED <stream> <seq>: why") and
// exits 1 when any proof fails.
import { createHash, createPublicKey, verify } from "node:crypto";
import { readFileSync } from "node:fs";

const sha256 = (...parts) => {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest();
};
const u32 = (n) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const str = (s) => {
  const b = Buffer.from(s, "utf8");
  return Buffer.concat([u32(b.length), b]);
};

function leafBytes(leaf) {
  const seq = Buffer.alloc(8);
  seq.writeBigUInt64BE(BigInt(leaf.seq));
  const names = Object.keys(leaf.headers).sort((a, b) =>
    Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")),
  );
  const parts = [Buffer.from("aqe.audit.leaf.v1\0", "utf8"), str(leaf.stream), seq, str(leaf.subject)];
  parts.push(u32(names.length));
  for (const n of names) parts.push(str(n), str(leaf.headers[n]));
  const data = Buffer.from(leaf.data, "base64");
  parts.push(u32(data.length), data);
  return Buffer.concat(parts);
}

// RFC 9162 §2.1.3.2
function verifyInclusion(leafHash, index, size, path, root) {
  if (index >= size) return false;
  let fn = BigInt(index);
  let sn = BigInt(size - 1);
  let r = leafHash;
  for (const hex of path) {
    const p = Buffer.from(hex, "hex");
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      r = sha256(Buffer.from([1]), p, r);
      if ((fn & 1n) === 0n) {
        while (fn !== 0n && (fn & 1n) === 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = sha256(Buffer.from([1]), r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && r.equals(root);
}

function sealBytes(s) {
  const lines = [
    "aqe.audit.seal.v1",
    s.stream,
    String(s.tree_size),
    s.root,
    String(s.last_seq),
    String(s.prev_size ?? 0),
    s.prev_root ?? "",
    String(s.prev_last_seq ?? 0),
    s.sealed_at ?? "",
    s.signer ?? "",
    s.detail_sha256,
  ];
  return Buffer.from(lines.join("\n"), "utf8");
}

const [file, pub] = process.argv.slice(2);
const key = createPublicKey({
  key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), Buffer.from(pub, "base64")]),
  format: "der",
  type: "spki",
});
const keyId = createHash("sha256").update(Buffer.from(pub, "base64")).digest("hex").slice(0, 16);
let failed = 0;
for (const line of readFileSync(file, "utf8").split("\n")) {
  if (!line.trim()) continue;
  const proof = JSON.parse(line);
  const { leaf, seal } = proof;
  const why = [];
  if (proof.format !== "aqe.audit.inclusion.v1") why.push("unknown format");
  if (seal.signer !== keyId) why.push("signer is not the trusted key");
  if (!verify(null, sealBytes(seal), key, Buffer.from(seal.signature ?? "", "base64")))
    why.push("seal signature does not verify");
  if (proof.tree_size !== seal.tree_size) why.push("tree size is not the seal's");
  const leafHash = sha256(Buffer.from([0]), leafBytes(leaf));
  if (!verifyInclusion(leafHash, proof.leaf_index, proof.tree_size, proof.path, Buffer.from(seal.root, "hex")))
    why.push("audit path does not lead to the seal's root");
  if (why.length) {
    failed += 1;
    console.log(`FAILED ${leaf.stream} ${leaf.seq}: ${why.join("; ")}`);
  } else {
    console.log(`ok ${leaf.stream} ${leaf.seq}`);
  }
}
process.exit(failed ? 1 : 0);
