"""What egress produces to Kafka is compressed at LZ4's fast level (egress.bus.lz4)."""

from __future__ import annotations

import cramjam
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

import egress.bus.kafka  # noqa: F401 - importing it sets the level, as every producer of egress does
from egress.bus.lz4 import LEVEL

_LZ4, _NONE = 3, 0
_HEADER = 61  # a v2 record batch's header


def _batch(codec: int) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False, producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)  # fmt: skip
    for i in range(200):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=b"44:19:b6:12:34:%02x" % (i % 50), value=b'{"event":{"kind":"event"},"n":%d}' % i, headers=[])
    return bytes(builder.build())


def _frame(data: bytes, level: int) -> bytes:
    compressor = cramjam.lz4.Compressor(level=level, content_checksum=False, block_linked=False)
    compressor.compress(data)
    return bytes(compressor.finish())


def test_record_batches_are_compressed_at_the_fast_level_and_read_back() -> None:
    records = _batch(_NONE)[_HEADER:]
    built = _batch(_LZ4)
    assert built[_HEADER:] == _frame(records, LEVEL) != _frame(records, 9)
    batch = DefaultRecordBatch(bytearray(built))
    assert [r.value for r in batch][:2] == [b'{"event":{"kind":"event"},"n":0}', b'{"event":{"kind":"event"},"n":1}']
