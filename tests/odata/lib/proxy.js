'use strict'
// The fault-injecting proxy: forwards every request to the direct port
// unchanged (streamed, over kept-alive connections), counts what it sees
// and, when told to through POST /_test/faults, answers some requests to
// the OData service with Dataverse's 429 or resets their connection
// instead of forwarding them. Node's built-in http only.
const http = require('node:http')
const state = require('./state')

const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authorization', 'proxy-authenticate',
])

// Service-protection messages by code, as Dataverse words them.
const THROTTLE_MESSAGES = {
  '0x80072322': 'Number of requests exceeded the limit of 6000 over time window of 300 seconds.',
  '0x80072321': 'Combined execution time of incoming requests exceeded limit of 1,200,000 milliseconds over time window of 300 seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.',
  '0x80072326': 'Number of concurrent requests exceeded the limit of 52.',
}

const REQUEST_LINE = /^(GET|POST|PUT|PATCH|DELETE|MERGE|HEAD) \S+ HTTP\/\d\.\d\r?$/

// Counts the requests inside a $batch body while it streams past:
// request lines of multipart parts, or "method" members of a JSON batch.
function batchPartCounter(contentType) {
  const json = /application\/json/i.test(contentType || '')
  let carry = ''
  let parts = 0
  const scan = (text, final) => {
    const lines = text.split('\n')
    carry = final ? '' : lines.pop()
    if (carry.length > 4096) carry = carry.slice(-4096)
    for (const line of lines) {
      if (json) parts += (line.match(/"method"\s*:/g) || []).length
      else if (REQUEST_LINE.test(line)) parts++
    }
  }
  return {
    push: chunk => scan(carry + chunk.toString('latin1'), false),
    end: () => {
      scan(carry, true)
      return parts
    },
  }
}

function startProxy(targetPort, { log }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 256 })
  let sequence = 0 // service requests since the faults were last set
  // Forwarded requests' times, for the service protection window.
  const window = []

  const server = http.createServer((req, res) => {
    const path = req.url.split('?')[0]
    const isService = path.startsWith(state.SERVICE_PATH) || path === state.SERVICE_PATH.slice(0, -1)
    const stats = state.stats

    if (isService) {
      stats.requests++
      stats.by_method[req.method] = (stats.by_method[req.method] || 0) + 1
      stats.in_flight++
      if (stats.in_flight > stats.max_in_flight) stats.max_in_flight = stats.in_flight
      let done = false
      const finish = () => {
        if (done) return
        done = true
        state.stats.in_flight = Math.max(0, state.stats.in_flight - 1)
      }
      res.on('close', finish)

      const f = state.faults
      const n = ++sequence
      if (f.reset_every > 0 && n % f.reset_every === 0) {
        stats.resets++
        log(`proxy: reset ${req.method} ${req.url}`)
        finish()
        // RST, not FIN: the client sees "connection reset by peer".
        if (typeof req.socket.resetAndDestroy === 'function') req.socket.resetAndDestroy()
        else req.socket.destroy()
        return
      }
      // Dataverse's service protection: at most limit_requests requests in
      // any limit_window_ms; beyond, 429 with the seconds until the oldest
      // request of the window leaves it.
      let retryAfter = f.retry_after ?? 1
      let limited = false
      if (f.limit_requests > 0 && f.limit_window_ms > 0) {
        const now = Date.now()
        while (window.length && window[0] <= now - f.limit_window_ms) window.shift()
        if (window.length >= f.limit_requests) {
          limited = true
          retryAfter = Math.max(1, Math.ceil((window[0] + f.limit_window_ms - now) / 1000))
        } else {
          window.push(now)
        }
      }
      if (limited || (f.throttle_every > 0 && n % f.throttle_every === 0)) {
        stats.throttled++
        log(`proxy: 429 ${req.method} ${req.url}`)
        const code = f.throttle_code || '0x80072322'
        const body = JSON.stringify({
          error: { code, message: THROTTLE_MESSAGES[code] || THROTTLE_MESSAGES['0x80072322'] },
        })
        req.resume() // drain the body so the connection stays usable
        const send = () =>
          res.writeHead(429, {
            'Content-Type': 'application/json; odata.metadata=minimal',
            'Content-Length': Buffer.byteLength(body),
            'Retry-After': String(retryAfter),
            'OData-Version': '4.0',
            'x-ms-service-request-id': cryptoId(),
          }).end(body)
        if (req.readableEnded) send()
        else req.on('end', send)
        return
      }
      if (req.method === 'POST' && /\/\$batch$/.test(path)) stats.batch_requests++
    }
    const isBatch = isService && req.method === 'POST' && /\/\$batch$/.test(path)

    const forward = () => {
      if (isBatch) {
        const counter = batchPartCounter(req.headers['content-type'])
        req.on('data', counter.push)
        req.on('end', () => {
          state.stats.batch_parts += counter.end()
        })
      }
      const headers = {}
      for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(k)) headers[k] = v
      const upstream = http.request(
        { host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers, agent },
        up => {
          const out = {}
          for (const [k, v] of Object.entries(up.headers)) if (!HOP_BY_HOP.has(k)) out[k] = v
          res.writeHead(up.statusCode, up.statusMessage, out)
          up.pipe(res)
          up.on('error', () => res.destroy())
        }
      )
      upstream.on('error', err => {
        log(`proxy: upstream error ${err.message}`)
        if (!res.headersSent) res.writeHead(502, { 'Content-Type': 'text/plain' }).end('bad gateway\n')
        else res.destroy()
      })
      res.on('close', () => {
        if (!res.writableFinished) upstream.destroy()
      })
      req.pipe(upstream)
    }

    const delay = isService ? state.faults.delay_ms : 0
    if (delay > 0) {
      req.pause()
      setTimeout(forward, delay)
    } else forward()
  })

  server.keepAliveTimeout = 300_000
  server.headersTimeout = 301_000
  server.requestTimeout = 0
  return {
    server,
    resetSequence() {
      sequence = 0
      window.length = 0
    },
  }
}

let idCounter = 0
const cryptoId = () => `00000000-0000-4000-8000-${String(++idCounter).padStart(12, '0')}`

module.exports = { startProxy, batchPartCounter }
