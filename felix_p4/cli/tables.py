"""`felix-p4 tables`: read a device's entries and print them by P4Info names."""

from __future__ import annotations

import json

from felix_p4.p4.client import P4RuntimeClient, P4RuntimeClientError
from felix_p4.p4.schema import PipelineSchema


async def dump_tables(address: str, device_id: int, as_json: bool) -> int:
    # Reading needs no arbitration, so this never disturbs the driver's mastership.
    client = P4RuntimeClient(address, device_id, election_id=0)
    client.open()
    try:
        p4info, _ = await client.get_pipeline()
        if p4info is None:
            print("device has no pipeline")
            return 1
        schema = PipelineSchema(p4info)
        entries = [schema.decode(pb) for pb in await client.read_table_entries()]
    except P4RuntimeClientError as exc:
        print(f"tables: {exc}")
        return 1
    finally:
        await client.close()
    entries.sort(key=lambda e: (e.table, str(e.match)))
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "table": e.table,
                        "match": {name: str(m) for name, m in e.match},
                        "priority": e.priority,
                        "action": e.action,
                        "params": dict(e.params),
                    }
                    for e in entries
                ],
                indent=2,
            )
        )
    else:
        for entry in entries:
            print(entry)
        print(f"{len(entries)} entries")
    return 0
