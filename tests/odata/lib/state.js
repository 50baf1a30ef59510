'use strict'
// State shared by the service, the test endpoints and the proxy of one
// server process: the row-version counter, issued tokens, fault settings
// and the proxy's counters.
const crypto = require('node:crypto')

const SERVICE_PATH = '/api/data/v9.2/'
const TENANT = 'lethe-test-tenant'
const CLIENT_ID = 'lethe-test-client'
const CLIENT_SECRET = 'lethe-test-secret'

// Dataverse's versionnumber is a rowversion: one counter for the whole
// organisation, strictly increasing with every insert and update.
let version = 1000
const nextVersion = () => ++version

// Entity set -> Dataverse's logical (singular) entity name.
const LOGICAL_NAMES = {
  accounts: 'account',
  leads: 'lead',
  opportunities: 'opportunity',
  quotes: 'quote',
  salesorders: 'salesorder',
  annotations: 'annotation',
}

const tokens = new Set()

const whoAmI = {
  UserId: '6f0c7c84-7f5e-4d2a-9a53-1e8c6b0b0001',
  BusinessUnitId: '6f0c7c84-7f5e-4d2a-9a53-1e8c6b0b0002',
  OrganizationId: '6f0c7c84-7f5e-4d2a-9a53-1e8c6b0b0003',
}

const faults = { throttle_every: 0, retry_after: 1, reset_every: 0, delay_ms: 0, throttle_code: '0x80072322', limit_requests: 0, limit_window_ms: 0 }

const newStats = () => ({
  requests: 0,
  by_method: { GET: 0, DELETE: 0, POST: 0, PATCH: 0 },
  batch_requests: 0,
  batch_parts: 0,
  throttled: 0,
  resets: 0,
  in_flight: 0,
  max_in_flight: 0,
})
let stats = newStats()

const keyOf = entity => {
  for (const k in entity.keys) if (!entity.keys[k].isAssociation) return k
}

// "2024-05-01T10:00:00Z": Dataverse's timestamps have whole seconds.
const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z')

const lowerGuids = (entity, row) => {
  for (const name in row) {
    const v = row[name]
    if (typeof v === 'string' && entity.elements[name]?.type === 'cds.UUID') row[name] = v.toLowerCase()
  }
}

// Base64 text -> the number of bytes it stands for.
const base64Size = b64 => {
  const s = b64.replace(/\s+/g, '')
  if (!s) return 0
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0
  return Math.floor((s.length * 3) / 4) - pad
}

// What Dataverse fills in on a create: a key, the timestamps when none are
// given, statecode 0 (active), a row version, and for a note its file size
// and whether it has a document.
function prepareInsert(entity, row) {
  const key = keyOf(entity)
  if (key && row[key] == null) row[key] = crypto.randomUUID()
  lowerGuids(entity, row)
  const e = entity.elements
  if (e.createdon && row.createdon == null) row.createdon = now()
  if (e.modifiedon && row.modifiedon == null) row.modifiedon = row.createdon ?? now()
  if (e.statecode && row.statecode == null) row.statecode = 0
  if (e.documentbody) annotationSize(row)
  row.versionnumber = nextVersion()
  return row
}

// An update gets a new row version; createdon/modifiedon stay as given.
function prepareUpdate(entity, data) {
  lowerGuids(entity, data)
  if (entity.elements.documentbody) annotationSize(data)
  data.versionnumber = nextVersion()
}

function annotationSize(row) {
  if (!('documentbody' in row)) return
  const body = row.documentbody
  if (row.filesize == null) row.filesize = typeof body === 'string' ? base64Size(body) : 0
  if (row.isdocument == null) row.isdocument = typeof body === 'string' && body.length > 0
}

// Certificates of the app registration, by SHA-1 thumbprint (x5t).
const certificates = new Map()

module.exports = {
  certificates,
  SERVICE_PATH,
  TENANT,
  CLIENT_ID,
  CLIENT_SECRET,
  LOGICAL_NAMES,
  tokens,
  whoAmI,
  faults,
  get stats() {
    return stats
  },
  resetStats() {
    const inFlight = stats.in_flight
    stats = newStats()
    stats.in_flight = inFlight
  },
  nextVersion,
  keyOf,
  prepareInsert,
  prepareUpdate,
}
