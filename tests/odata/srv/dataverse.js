'use strict'
// The service implementation: what Dataverse does that CAP does not do by
// itself. Loaded by CAP as the implementation of srv/dataverse.cds.
const cds = require('@sap/cds')
const state = require('../lib/state')

const SERVICE_PATH = state.SERVICE_PATH

// The HTTP request and response of this very request: for a part of a
// $batch, req.http is the envelope's and req._ holds the part's own.
const ownRes = req => req._?.res ?? req.http?.res
// The Host the client connected to (the envelope's, for a batch part).
const hostOf = req => (cds.context?.http?.req ?? req.http?.req ?? req._?.req)?.headers?.host

// Dataverse answers PATCH and DELETE without If-Match (last writer wins);
// CAP answers 428 for an entity with an etag. This runs before CAP's own
// etag check (ApplicationService.handle), for plain requests and for the
// parts of a $batch alike.
function defaultIfMatch(req) {
  if (req.event !== 'UPDATE' && req.event !== 'DELETE') return
  const h = req.headers
  if (!h || h['if-match'] || h['if-none-match']) return
  h['if-match'] = '*'
}

// `Prefer: odata.maxpagesize=N` (1..5000) becomes the page size of a
// collection read: CAP's paging then emits @odata.nextLink when a page is
// full. The answer says `Preference-Applied`, as Dataverse's does.
function maxPageSize(req) {
  if (req.event !== 'READ' || !req.query?.SELECT || req.query.SELECT.one) return
  const prefer = req.headers?.prefer ?? req._?.req?.headers?.prefer
  const m = prefer && /odata\.maxpagesize\s*=\s*"?(\d+)/i.exec(prefer)
  if (!m) return
  const n = Math.min(Math.max(parseInt(m[1], 10), 1), 5000)
  const SELECT = req.query.SELECT
  const rows = SELECT.limit?.rows
  const top = rows == null ? null : (rows.val ?? rows) // $top, or what is left of it on a later page
  SELECT.limit = { ...(SELECT.limit || {}), rows: { val: top != null && top < n ? top : n } }
  const res = ownRes(req)
  if (res && !res.headersSent) res.setHeader('Preference-Applied', `odata.maxpagesize=${n}`)
}

// Dataverse's @odata.nextLink is absolute; CAP's is relative to the
// service root. The base comes from the Host header of the request that
// reached the server, so a client that came through the proxy gets a link
// through the proxy. For a part of a $batch the host is the envelope's.
function absoluteNextLink(req) {
  if (req.event !== 'READ' || req.query?.SELECT?.one) return
  const res = ownRes(req)
  const host = hostOf(req)
  if (!res || res.__nextLinkWrapped || !host) return
  const base = `http://${host}${SERVICE_PATH}`
  const json = res.json
  res.__nextLinkWrapped = true
  res.json = function (body) {
    const link = body && body['@odata.nextLink']
    if (typeof link === 'string' && !/^https?:/i.test(link)) {
      body['@odata.nextLink'] = base + link.replace(/^\//, '')
    }
    return json.call(this, body)
  }
}

// Dataverse's error codes and messages for what a client branches on (a
// stale row version, a row that does not exist); the status stays CAP's.
function dataverseError(err, req) {
  if (!err || typeof err !== 'object') return err
  const status = Number(err.status ?? err.statusCode ?? err.code)
  if (status === 412) {
    err.status = 412
    err.code = '0x80060882'
    err.message = "The version of the existing record doesn't match the RowVersion property provided."
  } else if (status === 404 && req.target) {
    const set = req.target.name.split('.').pop()
    const id = req.data?.[state.keyOf(req.target)] ?? ''
    err.status = 404
    err.code = '0x80040217'
    err.message = `${state.LOGICAL_NAMES[set] ?? set} With Id = ${id} Does Not Exist`
  }
  return err
}

class DataverseService extends cds.ApplicationService {
  async handle(req) {
    defaultIfMatch(req)
    maxPageSize(req)
    absoluteNextLink(req)
    let result
    try {
      result = await super.handle(req)
    } catch (err) {
      throw dataverseError(err, req)
    }
    // CAP's adapter answers a missing row with a bare 404 later on.
    if (result == null && req.event === 'READ' && req.query?.SELECT?.one && req.target && !req.target._isSingleton) {
      throw dataverseError(Object.assign(new Error('Not Found'), { status: 404 }), req)
    }
    return result
  }

  init() {
    this.before('CREATE', '*', req => {
      const rows = Array.isArray(req.data) ? req.data : [req.data]
      for (const row of rows) state.prepareInsert(req.target, row)
    })
    this.before('UPDATE', '*', req => {
      state.prepareUpdate(req.target, req.data)
    })
    // Dataverse answers a create with OData-EntityId (the new row's URL).
    this.after('CREATE', '*', (_result, req) => {
      const res = ownRes(req)
      const key = state.keyOf(req.target)
      const row = req.data
      if (!res || res.headersSent || !row || !key || !row[key]) return
      const host = hostOf(req)
      if (host) res.setHeader('OData-EntityId', `http://${host}${SERVICE_PATH}${req.target.name.split('.').pop()}(${row[key]})`)
    })
    // Dataverse's parental cascade for notes: deleting a row deletes the
    // notes attached to it (objectid), in the same transaction. Tests use it
    // to show that lethe deletes the notes it planned first, itself, and
    // never lets the cascade take one it did not plan.
    this.after('DELETE', '*', async (_result, req) => {
      const set = req.target?.name?.split('.').pop()
      if (!set || set === 'annotations') return
      const key = state.keyOf(req.target)
      const id = req.data?.[key]
      if (!id) return
      const notes = Object.values(this.entities).find(e => e.name.split('.').pop() === 'annotations')
      if (notes) await DELETE.from(notes).where({ _objectid_value: String(id).toLowerCase() })
    })
    this.on('WhoAmI', () => state.whoAmI)
    return super.init()
  }
}

module.exports = DataverseService
