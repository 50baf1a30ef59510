'use strict'
// Checks that the test server comes up, as a test would use it: starts
// server.js, waits for its JSON line, takes a token from the fake Azure
// AD, fetches $metadata through the proxy with it (and checks that it is
// refused without), then stops the server. Exit status 0 when all of that
// worked; otherwise 1 with the reason and the server's log on stderr.
//
//   node_modules/.bin/node smoke.js
const { spawn } = require('node:child_process')
const path = require('node:path')

const TIMEOUT_MS = 30_000
const t0 = Date.now()
const child = spawn(process.execPath, [path.join(__dirname, 'server.js'), '--verbose'], {
  stdio: ['pipe', 'pipe', 'pipe'],
})
let log = ''
child.stderr.on('data', d => (log += d))

const fail = msg => {
  process.stderr.write(`odata test server smoke check failed: ${msg}\n`)
  if (log) process.stderr.write(`--- server log ---\n${log}\n`)
  child.kill('SIGKILL')
  process.exit(1)
}
const timer = setTimeout(() => fail(`no ready line within ${TIMEOUT_MS / 1000} s`), TIMEOUT_MS)
const onExit = (code, signal) => fail(`the server exited (${code ?? signal}) before the check ended`)
child.on('exit', onExit)
child.on('error', e => fail(`cannot start ${process.execPath}: ${e.message}`))

let out = ''
child.stdout.on('data', d => {
  out += d
  const nl = out.indexOf('\n')
  if (nl < 0) return
  child.stdout.removeAllListeners('data')
  let info
  try {
    info = JSON.parse(out.slice(0, nl))
  } catch {
    return fail(`the first stdout line is not JSON: ${out.slice(0, nl)}`)
  }
  check(info, Date.now() - t0).catch(e => fail(e.message))
})

async function check(info, readyMs) {
  for (const k of ['direct', 'proxy', 'service', 'tenant', 'client_id', 'client_secret']) {
    if (typeof info[k] !== 'string') throw new Error(`the ready line lacks "${k}": ${JSON.stringify(info)}`)
  }
  const form = new URLSearchParams({
    grant_type: 'client_credentials',
    client_id: info.client_id,
    client_secret: info.client_secret,
    scope: 'https://lethe-test.crm.dynamics.com/.default',
  })
  const tok = await fetch(`${info.direct}/${info.tenant}/oauth2/v2.0/token`, { method: 'POST', body: form })
  if (tok.status !== 200) throw new Error(`token endpoint answered ${tok.status}: ${await tok.text()}`)
  const { access_token } = await tok.json()

  const metadata = `${info.proxy}${info.service}$metadata`
  const anon = await fetch(metadata)
  await anon.text()
  if (anon.status !== 401) throw new Error(`$metadata without a token answered ${anon.status}, not 401`)
  const res = await fetch(metadata, { headers: { Authorization: `Bearer ${access_token}` } })
  const body = await res.text()
  if (res.status !== 200) throw new Error(`$metadata through the proxy answered ${res.status}: ${body.slice(0, 500)}`)
  if (!body.includes('<EntitySet Name="leads"')) throw new Error(`$metadata lacks the leads set: ${body.slice(0, 500)}`)

  clearTimeout(timer)
  child.off('exit', onExit)
  child.on('exit', () => {
    process.stdout.write(`odata test server: ready in ${readyMs} ms; token and $metadata through the proxy OK\n`)
    process.exit(0)
  })
  child.kill('SIGTERM')
}
