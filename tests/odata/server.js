'use strict'
// The Dataverse test partner's launcher. Starts one isolated server (an
// empty in-memory SQLite database behind SAP CAP's OData v4 adapter, with
// a fake Azure AD token endpoint and test endpoints) and the
// fault-injecting proxy in front of it, each on 127.0.0.1, and prints one
// JSON line on stdout when both listen. Runs until killed or until stdin
// ends (so a test that dies leaves no server behind).
//
//   node_modules/.bin/node server.js [--port N] [--proxy-port N] [--verbose] [--ignore-stdin]
//
// Everything but that line goes to stderr, and only with --verbose.
const started = process.hrtime.bigint()
const util = require('node:util')
const path = require('node:path')
const crypto = require('node:crypto')
const http = require('node:http')

const args = process.argv.slice(2)
const opt = (name, fallback) => {
  const i = args.indexOf(name)
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback
}
const flag = name => args.includes(name)
const usage = () => {
  process.stderr.write('usage: server.js [--port N] [--proxy-port N] [--verbose] [--ignore-stdin]\n')
  process.exit(2)
}
const directPort = Number(opt('--port', '0'))
const proxyPort = Number(opt('--proxy-port', '0'))
if (!Number.isInteger(directPort) || !Number.isInteger(proxyPort) || flag('--help') || flag('-h')) usage()
const verbose = flag('--verbose') || !!process.env.LETHE_ODATA_VERBOSE

// stdout carries the one JSON line: CAP's own console output goes to
// stderr, and only when asked for.
const toStderr = (...a) => {
  if (verbose) process.stderr.write(util.format(...a) + '\n')
}
console.log = console.info = console.debug = console.warn = console.error = console.trace = toStderr
const log = toStderr
// Node's warnings (node:sqlite is "experimental" in Node 22) likewise.
process.removeAllListeners('warning')
process.on('warning', w => log(`${w.name}: ${w.message}`))

const fatal = err => {
  process.stderr.write(`odata test server: ${err && err.stack ? err.stack : err}\n`)
  process.exit(1)
}
process.on('uncaughtException', fatal)
process.on('unhandledRejection', fatal)
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => process.exit(0))

if (!flag('--ignore-stdin')) {
  process.stdin.on('end', () => process.exit(0))
  process.stdin.on('close', () => process.exit(0))
  process.stdin.on('error', () => process.exit(0))
  process.stdin.resume()
}

const cds = require('@sap/cds')
cds.root = __dirname // config (package.json "cds") and model (srv/) come from here, whatever the cwd
const express = require('express')
const { INSERT, DELETE } = cds.ql
const state = require('./lib/state')
const { startProxy } = require('./lib/proxy')
const { compat } = require('./lib/compat')

const SERVICE = state.SERVICE_PATH.slice(0, -1) // '/api/data/v9.2'

async function main() {
  const csn = await cds.load(path.join(__dirname, 'srv'))
  cds.model = cds.compile.for.nodejs(csn)
  cds.db = await cds.connect.to('db')
  await cds.deploy(csn).to(cds.db)

  const app = express()
  app.disable('x-powered-by')
  app.disable('etag')

  // --- fake Azure AD (v2.0 token endpoint, client-credentials grant)
  app.post('/:tenant/oauth2/v2.0/token', express.urlencoded({ extended: false }), (req, res) => tokenEndpoint(req, res))

  // --- test endpoints (direct port; no auth)
  app.use('/_test', express.json({ limit: '2gb' }), testRoutes())

  // --- the OData service: a bearer token from the endpoint above, always
  app.use(SERVICE, (req, res, next) => {
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization || '')
    if (!m || !state.tokens.has(m[1])) {
      const host = req.headers.host || `127.0.0.1:${directPort}`
      res.status(401)
      res.set('WWW-Authenticate', `Bearer authorization_uri=http://${host}/${state.TENANT}/oauth2/authorize, resource_id=http://${host}/`)
      return res.json({ error: { code: '0x80072560', message: m ? 'The user is not authenticated: the access token is unknown or has expired.' : 'The user is not authenticated: no bearer token.' } })
    }
    next()
  }, compat(state.SERVICE_PATH))

  await cds.serve('all', { from: false }).in(app)
  await cds.emit('served', cds.services)

  const direct = await listen(app, directPort)
  const proxy = startProxy(direct.address().port, { log })
  app.locals.proxy = proxy
  await listen(proxy.server, proxyPort)
  const p1 = direct.address().port
  const p2 = proxy.server.address().port
  process.stdout.write(
    JSON.stringify({
      direct: `http://127.0.0.1:${p1}`,
      proxy: `http://127.0.0.1:${p2}`,
      service: state.SERVICE_PATH,
      tenant: state.TENANT,
      client_id: state.CLIENT_ID,
      client_secret: state.CLIENT_SECRET,
    }) + '\n'
  )
  log(`ready in ${Number(process.hrtime.bigint() - started) / 1e6} ms`)
}

function listen(handler, port) {
  return new Promise((resolve, reject) => {
    const server = handler instanceof http.Server ? handler : http.createServer(handler)
    server.keepAliveTimeout = 300_000
    server.headersTimeout = 301_000
    server.requestTimeout = 0
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve(server))
  })
}

// --- Azure AD ---------------------------------------------------------------

function aadError(res, status, error, code, description) {
  const trace = crypto.randomUUID()
  const correlation = crypto.randomUUID()
  const timestamp = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z')
  res.status(status).json({
    error,
    error_description: `AADSTS${code}: ${description}\r\nTrace ID: ${trace}\r\nCorrelation ID: ${correlation}\r\nTimestamp: ${timestamp}`,
    error_codes: [code],
    timestamp,
    trace_id: trace,
    correlation_id: correlation,
    error_uri: `https://login.microsoftonline.com/error?code=${code}`,
  })
}

// A certificate credential's client assertion, as Azure AD checks it: a
// JWT signed RS256 by the key of a certificate registered for the app
// (POST /_test/certificate), named by its SHA-1 thumbprint (x5t), for
// this token endpoint (aud), by and for the client (iss, sub), in date.
// Returns why it is refused, or nothing.
function checkAssertion(body, clientId, audience) {
  if (body.client_assertion_type !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') return 'client_assertion_type is not jwt-bearer'
  const parts = String(body.client_assertion || '').split('.')
  if (parts.length !== 3) return 'not a JWT'
  let header, claims
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url'))
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'))
  } catch {
    return 'not a JWT'
  }
  if (header.alg !== 'RS256') return `alg ${header.alg} is not RS256`
  const cert = state.certificates.get(header.x5t)
  if (!cert) return `no certificate with thumbprint ${header.x5t} is registered for the app`
  const ok = crypto.verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), cert.publicKey, Buffer.from(parts[2], 'base64url'))
  if (!ok) return 'the signature does not verify'
  const now = Math.floor(Date.now() / 1000)
  if (claims.iss !== clientId || claims.sub !== clientId) return 'iss and sub must be the client id'
  if (claims.aud !== audience) return `aud ${claims.aud} is not ${audience}`
  if (!(claims.exp > now) || (claims.nbf ?? 0) > now + 300) return 'expired or not yet valid'
  return null
}

function tokenEndpoint(req, res) {
  const body = req.body || {}
  let { client_id, client_secret } = body
  // client_secret_basic as well as client_secret_post
  const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization || '')
  if (basic) {
    const [id, secret] = Buffer.from(basic[1], 'base64').toString().split(':')
    client_id ??= decodeURIComponent(id || '')
    client_secret ??= decodeURIComponent(secret || '')
  }
  if (req.params.tenant !== state.TENANT && req.params.tenant !== 'organizations') {
    return aadError(res, 400, 'invalid_request', 90002, `Tenant '${req.params.tenant}' not found.`)
  }
  if (body.grant_type !== 'client_credentials') {
    return aadError(res, 400, 'unsupported_grant_type', 70003, `The app requested an unsupported grant type '${body.grant_type ?? ''}'.`)
  }
  if (client_id !== state.CLIENT_ID) {
    return aadError(res, 401, 'invalid_client', 700016, `Application with identifier '${client_id ?? ''}' was not found in the directory '${state.TENANT}'.`)
  }
  if (body.client_assertion_type !== undefined || body.client_assertion !== undefined) {
    const why = checkAssertion(body, client_id, `http://${req.headers.host}${req.originalUrl.split('?')[0]}`)
    if (why) return aadError(res, 401, 'invalid_client', 700027, `Client assertion failed signature validation: ${why}`)
  } else if (client_secret !== state.CLIENT_SECRET) {
    return aadError(res, 401, 'invalid_client', 7000215, 'Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.')
  }
  if (typeof body.scope !== 'string' || !body.scope.split(' ').some(s => s.endsWith('/.default'))) {
    return aadError(res, 400, 'invalid_scope', 1002012, `The provided value for scope ${body.scope ?? ''} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`)
  }
  const token = crypto.randomBytes(32).toString('base64url')
  state.tokens.add(token)
  res.set('Cache-Control', 'no-store, no-cache')
  res.json({ token_type: 'Bearer', expires_in: 3599, ext_expires_in: 3599, access_token: token })
}

// --- test endpoints -----------------------------------------------------------

function entitySets() {
  const srv = cds.services['Microsoft.Dynamics.CRM']
  const sets = {}
  for (const e of srv.entities) sets[e.name.split('.').pop()] = e
  return sets
}

function testRoutes() {
  const r = express.Router()

  // {"leads":[{...}], "opportunities":[...]} -> rows inserted directly
  r.post('/seed', async (req, res) => {
    const t0 = process.hrtime.bigint()
    const sets = entitySets()
    const body = req.body
    if (!body || typeof body !== 'object' || Array.isArray(body)) return res.status(400).json({ error: 'expected {"set":[rows], ...}' })
    for (const name of Object.keys(body)) {
      if (!sets[name]) return res.status(400).json({ error: `unknown entity set '${name}'`, sets: Object.keys(sets) })
      if (!Array.isArray(body[name])) return res.status(400).json({ error: `'${name}' must be an array of rows` })
      // CAP would drop an unknown column without a word: a typo in a test
      // should not pass unnoticed.
      const elements = sets[name].elements
      for (const row of body[name]) {
        if (!row || typeof row !== 'object' || Array.isArray(row)) return res.status(400).json({ error: `'${name}' must be an array of objects` })
        for (const col in row) {
          if (!elements[col]) return res.status(400).json({ error: `'${name}' has no column '${col}'`, columns: Object.keys(elements) })
        }
      }
    }
    const inserted = {}
    try {
      await cds.db.tx(async tx => {
        for (const [name, rows] of Object.entries(body)) {
          const entity = sets[name]
          for (const row of rows) state.prepareInsert(entity, row)
          for (let i = 0; i < rows.length; i += 1000) await tx.run(INSERT.into(entity).entries(rows.slice(i, i + 1000)))
          inserted[name] = rows.length
        }
      })
    } catch (e) {
      return res.status(400).json({ error: e.message })
    }
    res.json({ inserted, ms: Number(process.hrtime.bigint() - t0) / 1e6 })
  })

  r.post('/reset', async (_req, res) => {
    const sets = entitySets()
    await cds.db.tx(async tx => {
      for (const e of Object.values(sets)) await tx.run(DELETE.from(e))
    })
    res.json({ reset: Object.keys(sets) })
  })

  r.get('/stats', (_req, res) => res.json(state.stats))
  r.post('/stats/reset', (_req, res) => {
    state.resetStats()
    res.json(state.stats)
  })

  // {"pem": "-----BEGIN CERTIFICATE-----…"}: a certificate of the app
  // registration, for client assertions; answers its thumbprint (x5t).
  r.post('/certificate', (req, res) => {
    let cert
    try {
      cert = new crypto.X509Certificate(String(req.body?.pem || ''))
    } catch (e) {
      return res.status(400).json({ error: `not a certificate: ${e.message}` })
    }
    const x5t = Buffer.from(cert.fingerprint.replace(/:/g, ''), 'hex').toString('base64url')
    state.certificates.set(x5t, cert)
    res.json({ x5t })
  })

  r.get('/faults', (_req, res) => res.json(state.faults))
  r.post('/faults', (req, res) => {
    const b = req.body || {}
    for (const k of ['throttle_every', 'retry_after', 'reset_every', 'delay_ms', 'limit_requests', 'limit_window_ms']) {
      if (b[k] === undefined) continue
      if (!Number.isInteger(b[k]) || b[k] < 0) return res.status(400).json({ error: `${k} must be a non-negative integer` })
      state.faults[k] = b[k]
    }
    if (b.throttle_code !== undefined) {
      if (typeof b.throttle_code !== 'string') return res.status(400).json({ error: 'throttle_code must be a string' })
      state.faults.throttle_code = b.throttle_code
    }
    req.app.locals.proxy?.resetSequence()
    res.json(state.faults)
  })

  // Forget every issued token: the next service request answers 401, as
  // when a Dataverse token has expired.
  r.post('/tokens/expire', (_req, res) => {
    const n = state.tokens.size
    state.tokens.clear()
    res.json({ expired: n })
  })

  return r
}

main().catch(fatal)
