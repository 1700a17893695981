// Compiles chain/contracts/*.sol offline with solc-js (the npm package pinned in package.json)
// and writes chain/artifacts/<Contract>.json: the ABI, creation and runtime bytecode, and the
// compiler settings. With --check it writes nothing and fails if the committed artifacts differ
// from a fresh compile (CI runs this).
//
//   node chain/scripts/compile.mjs           # write artifacts
//   node chain/scripts/compile.mjs --check   # verify committed artifacts

import { readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const contractsDir = join(root, "contracts");
const artifactsDir = join(root, "artifacts");
const check = process.argv.includes("--check");

// Pinned so that the bytecode does not change with solc's default target.
const settings = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  // No metadata hash: the artifact then depends only on the sources and these settings,
  // not on file paths or comments' whitespace elsewhere.
  metadata: { bytecodeHash: "none" },
  outputSelection: {
    "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
  },
};

const sources = {};
for (const file of readdirSync(contractsDir).filter((f) => f.endsWith(".sol")).sort()) {
  sources[file] = { content: readFileSync(join(contractsDir, file), "utf8") };
}

const output = JSON.parse(solc.compile(JSON.stringify({ language: "Solidity", sources, settings })));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) {
  console.error(e.formattedMessage);
}
if (errors.length > 0) {
  process.exit(1);
}

let stale = 0;
for (const [file, contracts] of Object.entries(output.contracts)) {
  for (const [name, c] of Object.entries(contracts)) {
    const artifact = {
      contractName: name,
      sourceName: `contracts/${file}`,
      compiler: { version: solc.version(), settings: { ...settings, outputSelection: undefined } },
      abi: c.abi,
      bytecode: { object: `0x${c.evm.bytecode.object}` },
      deployedBytecode: { object: `0x${c.evm.deployedBytecode.object}` },
    };
    const text = `${JSON.stringify(artifact, null, 2)}\n`;
    const path = join(artifactsDir, `${name}.json`);
    if (check) {
      if (!existsSync(path) || readFileSync(path, "utf8") !== text) {
        console.error(`stale artifact: chain/artifacts/${name}.json differs from a fresh compile`);
        stale += 1;
      }
    } else {
      writeFileSync(path, text);
      console.log(`wrote chain/artifacts/${name}.json (${c.evm.bytecode.object.length / 2} bytes)`);
    }
  }
}
if (stale > 0) {
  console.error("run `node chain/scripts/compile.mjs` and commit chain/artifacts/");
  process.exit(1);
}
if (check) {
  console.log(`artifacts match a fresh compile (solc ${solc.version()})`);
}
