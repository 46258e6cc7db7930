"""Entries for wildcard-tries.spec's table `policy`, one per line, as a policy compiler writes
them: 50 per program (exact), IP-set membership as set bits of two 64-bit fields, port ranges as
prefixes, some protocols and ICMP types; all keys and priorities distinct.

    python3 wildcard-tries.py [N] > entries.txt     # N = 1500 by default
"""

import random
import sys


def entries(n: int = 1500, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    priorities = rng.sample(range(1, 4 * n), n)
    seen: set[str] = set()
    lines: list[str] = []
    while len(lines) < n:
        i = len(lines)
        fields = [rng.choice(["0x6/0xff", "0x11/0xff", "0x1/0xff", "0x0/0x0"])]
        for chance in (0.7, 0.5):
            bits = sum(1 << rng.randrange(64) for _ in range(rng.randint(1, 3)))
            bits = bits if rng.random() < chance else 0
            fields.append(f"{bits:#x}/{bits:#x}")
        for chance in (0.1, 0.6):
            width = rng.randint(0, 8) if rng.random() < chance else 16
            mask = (0xFFFF << width) & 0xFFFF
            fields.append(f"{rng.randrange(1, 0x10000) & mask:#x}/{mask:#x}")
        icmp = rng.random() < 0.5 and fields[0] == "0x1/0xff"
        fields.append(f"{rng.randrange(256):#x}/0xff" if icmp else "0x0/0x0")
        key = f"match {i // 50} {' '.join(fields)}"
        if key not in seen:
            seen.add(key)
            lines.append(f"{key} priority {priorities[i]} action rule id {i}")
    return lines


if __name__ == "__main__":
    print("\n".join(entries(int(sys.argv[1]) if len(sys.argv) > 1 else 1500)))
