#!/usr/bin/env python3
"""Cross-checks pbts-verifier against py_ecc's G2ProofOfPossession (the original tracker's BLS).

Usage: py_ecc_interop.py IKM_HEX SK_HEX PK_HEX MSG_HEX SIG_HEX POP_HEX

Prints `name=value` lines (hex bytes or true/false). Run by tests/interop.rs; kept to a handful
of operations because py_ecc takes 0.2-0.5 s per signature or verification.
"""

import sys

try:
    from py_ecc.bls import G2ProofOfPossession as bls
except ImportError as e:
    print(f"py_ecc is not installed ({e}); run: python3 -m pip install py_ecc", file=sys.stderr)
    sys.exit(3)


def main() -> None:
    ikm, sk_bytes, pk, msg, sig, pop = (bytes.fromhex(a) for a in sys.argv[1:7])
    sk = int.from_bytes(sk_bytes, "big")
    out = {
        # Key generation and encoding.
        "keygen_sk": bls.KeyGen(ikm).to_bytes(32, "big").hex(),
        "sk_to_pk": bls.SkToPk(sk).hex(),
        # py_ecc signs our message with our key: the bytes must equal ours.
        "sign": bls.Sign(sk, msg).hex(),
        "pop_prove": bls.PopProve(sk).hex(),
        # py_ecc verifies our signature and proof, and rejects a tampered message.
        "verify": bls.Verify(pk, msg, sig),
        "pop_verify": bls.PopVerify(pk, pop),
        "verify_tampered": bls.Verify(pk, msg[:-1] + bytes([msg[-1] ^ 1]), sig),
    }
    for name, value in out.items():
        print(f"{name}={str(value).lower() if isinstance(value, bool) else value}")


if __name__ == "__main__":
    main()
