#!/usr/bin/env node
/*
 * A Joyent Manta (v2) simulator for dogestry's tests.
 *
 * It reproduces the behaviour of Manta's front end, muskie, as read from its
 * source (lib/auth.js, lib/common.js, lib/obj.js, lib/dir.js, lib/link.js,
 * lib/uploads/*.js, lib/errors.js, lib/server.js), on top of Joyent's own
 * signature libraries as packaged by Debian (node-http-signature, node-sshpk):
 * the Authorization header is parsed with httpSignature.parseRequest and
 * verified with httpSignature.verifySignature against sshpk keys, exactly the
 * calls muskie makes. See README.md beside this file for what is and is not
 * reproduced.
 *
 * Usage:
 *   node server.js --config CONFIG.json --root DIR [--port N] [--host 127.0.0.1]
 *                  [--log FILE] [--skew 300] [--port-file FILE]
 *                  [--tls-cert PEM --tls-key PEM] [--mpu-prefix-len 3]
 *                  [--min-part-size 5242880] [--max-streaming-mb 5120]
 *                  [--data-timeout 45]
 *
 * Only node's standard library and the Debian packages above are used.
 */
'use strict';

// NodeSource's node does not search Debian's /usr/share/nodejs; add it (the
// libraries' own require() calls need it too, hence NODE_PATH + _initPaths).
process.env.NODE_PATH = ['/usr/share/nodejs', '/usr/lib/nodejs', process.env.NODE_PATH]
    .filter(Boolean).join(':');
require('module').Module._initPaths();

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');
const os = require('os');
const path = require('path');
const querystring = require('querystring');

const httpSignature = require('http-signature');
const sshpk = require('sshpk');

// ------------------------------------------------------------------ constants

// muskie lib/auth.js SIGN_ALG (checked after http-signature's own parse, which
// only knows rsa/dsa/ecdsa with sha1/sha256/sha512: sha384 fails the parse).
const SIGN_ALG = {
    'RSA-SHA1': true, 'RSA-SHA256': true, 'RSA-SHA384': true, 'RSA-SHA512': true,
    'DSA-SHA1': true, 'DSA-SHA256': true,
    'ECDSA-SHA256': true, 'ECDSA-SHA384': true, 'ECDSA-SHA512': true
};

const DIR_CONTENT_TYPE = 'application/x-json-stream; type=directory';
const ZERO_BYTE_MD5 = '1B2M2Y8AsgTpgAmY7PhCfg==';
const DEF_MIN_COPIES = 1;
const DEF_MAX_COPIES = 9;
const DEF_NUM_COPIES = 2;
const MAX_DIRENTS = 1000000;
const MAX_HDRSIZE = 4 * 1024;
const CORS_RES_HDRS = ['access-control-allow-headers', 'access-control-allow-origin',
    'access-control-expose-headers', 'access-control-max-age', 'access-control-allow-methods'];

const ID_REGEX = /^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$/;
const PART_NUM_REGEX = /^([0-9]|[1-9][0-9]{0,3})$/;
const MAX_NUM_PARTS = 10000;
const MIN_PREFIX_LEN = 1;
const MAX_PREFIX_LEN = 4;

const PUBLIC_STOR_PATH = /^\/([a-zA-Z][a-zA-Z0-9_\-.@%]+)\/public(\/(.*)|$)/;
const REPORTS_STOR_PATH = /^\/([a-zA-Z][a-zA-Z0-9_\-.@%]+)\/reports(\/(.*)|$)/;
const STORAGE_ROUTE = /^\/([a-zA-Z][a-zA-Z0-9_\-.@%]+)\/(stor|public|reports|uploads)(\/(.*)|$)/;
const ROOT_REGEXPS = [
    /^\/[a-zA-Z0-9_\-.@%]+$/,
    /^\/[a-zA-Z0-9_\-.@%]+\/public\/?$/,
    /^\/[a-zA-Z0-9_\-.@%]+\/stor\/?$/,
    /^\/[a-zA-Z0-9_\-.@%]+\/jobs\/?$/,
    /^\/[a-zA-Z0-9_\-.@%]+\/uploads\/?$/,
    /^\/[a-zA-Z0-9_\-.@%]+\/buckets\/?$/,
    /^\/[a-zA-Z0-9_\-.@%]+\/jobs\/[\w-]+\/stor\/?$/,
    /^\/[a-zA-Z0-9_\-.@%]+\/reports\/?$/
];
// What GET /:account lists (muskie's storagePaths keys, sorted).
const ROOT_LISTING = ['buckets', 'jobs', 'public', 'reports', 'stor', 'uploads'];

// restify's cleanupContentType maps a bare extension through mime.lookup().
const MIME = {
    txt: 'text/plain', text: 'text/plain', html: 'text/html', htm: 'text/html', css: 'text/css',
    js: 'application/javascript', json: 'application/json', xml: 'application/xml',
    png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif',
    gz: 'application/x-gzip', tgz: 'application/x-gzip', tar: 'application/x-tar',
    zip: 'application/zip', pdf: 'application/pdf', bin: 'application/octet-stream'
};

const HOSTNAME = os.hostname();

// ------------------------------------------------------------------ errors

class MantaError extends Error {
    constructor(status, code, message, headers) {
        super(message);
        this.status = status;
        this.code = code;
        this.headers = headers || {};
    }
}

function E(status, code, message, headers) {
    return new MantaError(status, code, message, headers);
}

const errors = {
    resourceNotFound: (p) => E(404, 'ResourceNotFound', p + ' was not found'),
    // restify's own ResourceNotFoundError (no route; moray ObjectNotFound)
    doesNotExist: (p) => E(404, 'ResourceNotFound', p + ' does not exist'),
    dirDoesNotExist: (p) => E(404, 'DirectoryDoesNotExist', path.posix.dirname(p) + ' does not exist'),
    dirNotEmpty: (p) => E(400, 'DirectoryNotEmpty', p + ' is not empty'),
    dirOperation: (p, m) => E(400, 'OperationNotAllowedOnDirectory', p + ' is a directory: ' + m + ' is not allowed'),
    parentNotDir: (p) => E(400, 'ParentNotDirectory', path.posix.dirname(p) + ' is not a directory'),
    rootDir: (m, p) => E(400, 'OperationNotAllowedOnRootDirectory', m + ' is not allowed on ' + p),
    invalidUpdate: (k, extra) => E(400, 'InvalidUpdate', 'overwrite of "' + k + '" forbidden' + (extra || '')),
    checksum: (expected, actual) => E(400, 'ContentMD5Mismatch', 'Content-MD5 expected ' + expected + ', but was ' + actual),
    contentLength: () => E(411, 'ContentLengthRequired', 'Content-Length must be >= 0'),
    durability: () => E(400, 'InvalidDurabilityLevel', 'durability-level must be between ' + DEF_MIN_COPIES + ' and ' + DEF_MAX_COPIES),
    maxContentLength: (l) => E(400, 'InvalidMaxContentLength', l + ' is an invalid max-content-length value'),
    maxSize: (m) => E(413, 'MaxContentLengthExceeded', 'request has exceeded ' + m + ' bytes'),
    invalidLimit: (l) => E(400, 'InvalidArgumentError', 'limit=' + l + ' is invalid: must be between [1, 1024]'),
    invalidParameter: (k, v) => E(400, 'InvalidParameter', '"' + v + '" is invalid for "' + k + '"'),
    invalidPath: (p) => E(400, 'InvalidResource', '"' + p + '" is invalid'),
    authorization: (login, p) => E(403, 'AuthorizationFailed', login + ' is not allowed to access ' + p),
    accountDoesNotExist: (a) => E(403, 'AccountDoesNotExist', a + ' does not exist'),
    accountBlocked: (a) => E(403, 'AccountBlocked', a + ' is not an active account'),
    userDoesNotExist: (a, u) => E(403, 'UserDoesNotExist', a + '/' + u + ' does not exist'),
    keyDoesNotExist: (a, k, u) => E(403, 'KeyDoesNotExist',
        u ? '/' + a + '/' + u + '/keys/' + k + ' does not exist' : '/' + a + '/keys/' + k + ' does not exist'),
    invalidKeyId: () => E(403, 'InvalidKeyId', 'the KeyId token you provided is invalid'),
    invalidSignature: () => E(403, 'InvalidSignature', 'The signature we calculated does not match the one you sent'),
    presigned: (m) => E(403, 'InvalidQueryStringAuthentication', m),
    internal: () => E(500, 'InternalError', 'an unexpected error occurred'),
    invalidRole: (r) => E(409, 'InvalidRole', 'Role "' + r + '" is invalid.'),
    mpuCreate: (m) => E(409, 'MultipartUploadInvalidArgument', 'cannot create upload: ' + m),
    mpuArg: (id, m) => E(409, 'MultipartUploadInvalidArgument', 'upload ' + id + ': ' + m),
    mpuState: (id, m) => E(409, 'InvalidMultipartUploadState', 'upload ' + id + ': ' + m),
    methodNotAllowed: (m) => E(405, 'MethodNotAllowed', m + ' is not allowed'),
    preconditionFailed: (m) => E(412, 'PreconditionFailed', m)
};

// ------------------------------------------------------------------ options

function usage(msg) {
    if (msg) process.stderr.write('manta-sim: ' + msg + '\n');
    process.stderr.write('usage: server.js --config FILE --root DIR [--port N] [--host H] [--log FILE]\n' +
        '       [--skew SECONDS] [--port-file FILE] [--tls-cert F --tls-key F] [--mpu-prefix-len N]\n' +
        '       [--min-part-size BYTES] [--max-streaming-mb MB] [--data-timeout SECONDS]\n');
    process.exit(2);
}

function parseArgs(argv) {
    const o = {};
    const names = {
        '--config': 'config', '--root': 'root', '--port': 'port', '--host': 'host', '--log': 'log',
        '--skew': 'skew', '--port-file': 'portFile', '--tls-cert': 'tlsCert', '--tls-key': 'tlsKey',
        '--mpu-prefix-len': 'mpuPrefixLen', '--min-part-size': 'minPartSize',
        '--max-streaming-mb': 'maxStreamingMB', '--data-timeout': 'dataTimeout'
    };
    for (let i = 2; i < argv.length; i++) {
        const a = argv[i];
        if (a === '-h' || a === '--help') usage();
        let k = a, v;
        const eq = a.indexOf('=');
        if (eq > 0) { k = a.slice(0, eq); v = a.slice(eq + 1); }
        if (!names[k]) usage('unknown option ' + a);
        if (v === undefined) {
            if (i + 1 >= argv.length) usage('missing value for ' + k);
            v = argv[++i];
        }
        o[names[k]] = v;
    }
    return o;
}

function loadOptions() {
    const cli = parseArgs(process.argv);
    if (!cli.config) usage('--config is required');
    const cfg = JSON.parse(fs.readFileSync(cli.config, 'utf8'));
    const fileOpts = cfg.options || {};
    const pick = (k, d) => (cli[k] !== undefined ? cli[k] : (fileOpts[k] !== undefined ? fileOpts[k] : d));
    const opts = {
        host: pick('host', '127.0.0.1'),
        port: parseInt(pick('port', 0), 10),
        root: pick('root', null),
        log: pick('log', null),
        skew: Number(pick('skew', 300)),
        portFile: pick('portFile', null),
        tlsCert: pick('tlsCert', null),
        tlsKey: pick('tlsKey', null),
        mpuPrefixLen: parseInt(pick('mpuPrefixLen', 3), 10),
        minPartSize: parseInt(pick('minPartSize', 5242880), 10),
        maxStreamingSize: Number(pick('maxStreamingMB', 5120)) * 1024 * 1024,
        dataTimeout: Number(pick('dataTimeout', 45)) * 1000
    };
    if (!opts.root) usage('--root is required');
    if (!(opts.skew > 0)) usage('--skew must be > 0');
    if (!(opts.mpuPrefixLen >= MIN_PREFIX_LEN && opts.mpuPrefixLen <= MAX_PREFIX_LEN)) {
        usage('--mpu-prefix-len must be in [1, 4]');
    }
    return { opts, cfg };
}

// ------------------------------------------------------------------ accounts

function parseKeyList(list, where) {
    const keys = new Map();
    (list || []).forEach((line) => {
        let key;
        try {
            key = sshpk.parseKey(line, 'ssh');
        } catch (e) {
            throw new Error(where + ': cannot parse public key: ' + e.message);
        }
        keys.set(key.fingerprint('md5').toString('hex'), key);
    });
    return keys;
}

function uuidFromName(name) {
    const h = crypto.createHash('sha1').update('manta-sim:' + name).digest('hex');
    return [h.slice(0, 8), h.slice(8, 12), '5' + h.slice(13, 16),
        ((parseInt(h[16], 16) & 3) | 8).toString(16) + h.slice(17, 20), h.slice(20, 32)].join('-');
}

function loadAccounts(cfg) {
    const accounts = new Map();
    Object.keys(cfg.accounts || {}).forEach((login) => {
        const a = cfg.accounts[login];
        const acct = {
            login: login,
            uuid: a.uuid || uuidFromName(login),
            isOperator: !!a.operator,
            approved: a.approved_for_provisioning !== false && !a.blocked,
            keys: parseKeyList(a.keys, 'account ' + login),
            roles: a.roles || [],
            users: new Map()
        };
        Object.keys(a.users || {}).forEach((ulogin) => {
            const u = a.users[ulogin];
            acct.users.set(ulogin, {
                login: ulogin,
                uuid: u.uuid || uuidFromName(login + '/' + ulogin),
                keys: parseKeyList(u.keys, 'user ' + login + '/' + ulogin),
                actions: u.actions || ['*'],
                roles: u.roles || []
            });
        });
        accounts.set(login, acct);
    });
    return accounts;
}

// ------------------------------------------------------------------ metadata store

function isRootDirectory(p) {
    return ROOT_REGEXPS.some((re) => re.test(p));
}

function keyName(key) {
    return key.split('/').pop();
}

function dirnameOf(key) {
    return path.posix.dirname(key);
}

// Names sort like the metadata tier's "C" collation: by UTF-8 bytes.
function byteCompare(a, b) {
    return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

class Store {
    constructor(root) {
        this.root = root;
        this.objDir = path.join(root, 'objects');
        this.tmpDir = path.join(root, 'tmp');
        this.journalPath = path.join(root, 'metadata.jsonl');
        this.entries = new Map();     // key -> metadata
        this.children = new Map();    // dir key -> Set of child keys
        this.finalizing = new Map();  // "<uploadId>:<objectPathKey>" -> finalizing record
        fs.mkdirSync(this.objDir, { recursive: true });
        fs.mkdirSync(this.tmpDir, { recursive: true });
        fs.readdirSync(this.tmpDir).forEach((f) => fs.rmSync(path.join(this.tmpDir, f), { force: true }));
        this._load();
    }

    _load() {
        if (fs.existsSync(this.journalPath)) {
            const lines = fs.readFileSync(this.journalPath, 'utf8').split('\n');
            lines.forEach((l) => {
                if (!l.trim()) return;
                let r;
                try { r = JSON.parse(l); } catch (e) { return; }  // torn last line
                if (r.op === 'put') this._put(r.key, r.md);
                else if (r.op === 'del') this._del(r.key);
                else if (r.op === 'fin') this.finalizing.set(r.key, r.md);
            });
        }
        // Compact: rewrite the journal as a snapshot.
        const tmp = this.journalPath + '.tmp';
        const out = [];
        this.entries.forEach((md, key) => out.push(JSON.stringify({ op: 'put', key: key, md: md })));
        this.finalizing.forEach((md, key) => out.push(JSON.stringify({ op: 'fin', key: key, md: md })));
        fs.writeFileSync(tmp, out.length ? out.join('\n') + '\n' : '');
        fs.renameSync(tmp, this.journalPath);
    }

    _append(rec) {
        fs.appendFileSync(this.journalPath, JSON.stringify(rec) + '\n');
    }

    _put(key, md) {
        if (!this.entries.has(key)) {
            const d = dirnameOf(key);
            if (!this.children.has(d)) this.children.set(d, new Set());
            this.children.get(d).add(key);
        }
        this.entries.set(key, md);
    }

    _del(key) {
        if (!this.entries.has(key)) return;
        this.entries.delete(key);
        const d = dirnameOf(key);
        const c = this.children.get(d);
        if (c) {
            c.delete(key);
            if (c.size === 0) this.children.delete(d);
        }
    }

    get(key) {
        const md = this.entries.get(key);
        if (md) return md;
        if (isRootDirectory(key)) return { type: 'directory', key: key, headers: {}, root: true };
        return null;
    }

    put(key, md) {
        const prev = this.entries.get(key);
        this._put(key, md);
        this._append({ op: 'put', key: key, md: md });
        if (prev && prev.type === 'object' && prev.objectId && prev.objectId !== md.objectId) {
            this.removeData(prev.objectId);
        }
    }

    del(key) {
        const prev = this.entries.get(key);
        this._del(key);
        this._append({ op: 'del', key: key });
        if (prev && prev.type === 'object' && prev.objectId) this.removeData(prev.objectId);
    }

    putFinalizing(key, md) {
        this.finalizing.set(key, md);
        this._append({ op: 'fin', key: key, md: md });
    }

    childCount(dirKey) {
        const c = this.children.get(dirKey);
        return c ? c.size : 0;
    }

    childEntries(dirKey) {
        const c = this.children.get(dirKey);
        if (!c) return [];
        return Array.from(c).map((k) => this.entries.get(k));
    }

    dataPath(objectId) {
        return path.join(this.objDir, objectId.slice(0, 2), objectId);
    }

    adoptData(tmpPath, objectId) {
        const p = this.dataPath(objectId);
        fs.mkdirSync(path.dirname(p), { recursive: true });
        fs.renameSync(tmpPath, p);
    }

    removeData(objectId) {
        // Objects still referenced (never the case without SnapLinks) are kept.
        for (const md of this.entries.values()) {
            if (md.objectId === objectId && md.type === 'object') return;
        }
        fs.rm(this.dataPath(objectId), { force: true }, () => {});
    }

    tmpFile() {
        return path.join(this.tmpDir, crypto.randomUUID());
    }
}

// ------------------------------------------------------------------ helpers

function rfc3986(str) {
    return encodeURIComponent(str)
        .replace(/[!'()]/g, escape)
        .replace(/\*/g, '%2A');
}

function sanitizePath(p) {
    // restify.pre.sanitizePath(): collapse '//' and drop one trailing '/'.
    p = p.replace(/\/\/+/g, '/');
    if (p.length > 1 && p.lastIndexOf('/') === p.length - 1) p = p.slice(0, -1);
    return p;
}

// libmanta.normalizeMantaPath(): decode each segment, rejoin with '/'.
function normalizeKey(p) {
    try {
        return p.replace(/\/*$/, '').split('/').map(decodeURIComponent).join('/');
    } catch (e) {
        return null;
    }
}

function httpDate(ms) {
    return new Date(ms).toUTCString();
}

function mediaBase(t) {
    return String(t || '').split(';')[0].trim().toLowerCase();
}

// restify's req.accepts(type) via negotiator: no Accept header accepts all.
function accepts(acceptHeader, type) {
    if (!acceptHeader) return true;
    const want = mediaBase(type);
    const [wt, ws] = want.split('/');
    return acceptHeader.split(',').some((part) => {
        const bits = part.split(';').map((s) => s.trim());
        const range = bits[0].toLowerCase();
        const q = bits.slice(1).map((b) => b.split('=')).find((kv) => kv[0] === 'q');
        if (q && Number(q[1]) === 0) return false;
        if (range === '*/*' || range === '*') return true;
        const [rt, rs] = range.split('/');
        return rt === wt && (rs === '*' || rs === ws);
    });
}

function cleanEtag(t) {
    t = t.replace(/^W\//, '');
    const m = /^"(.*)"$/.exec(t);
    return m ? m[1] : t;
}

// restify.conditionalRequest() (If-Match, If-None-Match, If-Modified-Since,
// If-Unmodified-Since) against the Etag/Last-Modified muskie set from metadata.
// Returns 'not-modified' when a 304 must be sent.
function conditional(ctx, md) {
    const req = ctx.req;
    const exists = !!(md && md.type);
    const etag = (md && md.etag) || '';
    const im = req.headers['if-match'];
    if (im) {
        const ok = im.split(/\s*,\s*/).map(cleanEtag).some((t) => (t === '*' ? exists : t === etag && etag !== ''));
        if (!ok) throw errors.preconditionFailed("if-match '" + im + "' didn't match etag '" + etag + "'");
    }
    const inm = req.headers['if-none-match'];
    if (inm) {
        const matched = inm.split(/\s*,\s*/).map(cleanEtag).some((t) => (t === '*' ? exists : t === etag && etag !== ''));
        if (matched) {
            if (req.method !== 'GET' && req.method !== 'HEAD') {
                throw errors.preconditionFailed("if-none-match '" + inm + "' matched etag '" + etag + "'");
            }
            return 'not-modified';
        }
    }
    const lastMod = md && md.mtime ? Math.floor(md.mtime / 1000) * 1000 : null;
    const ims = req.headers['if-modified-since'];
    if (ims && lastMod !== null && (req.method === 'GET' || req.method === 'HEAD')) {
        const d = new Date(ims).getTime();
        if (!isNaN(d) && lastMod <= d) return 'not-modified';
    }
    const ius = req.headers['if-unmodified-since'];
    if (ius && lastMod !== null) {
        const d = new Date(ius).getTime();
        if (!isNaN(d) && lastMod > d) {
            throw errors.preconditionFailed("object was modified at '" + httpDate(lastMod) +
                "'; if-unmodified-since '" + ius + "'");
        }
    }
    return null;
}

// nginx's range filter (mako serves object bytes with nginx): returns
// {kind:'ok', start, end (exclusive)}, {kind:'ignore'} (serve 200 in full) or
// {kind:'unsatisfiable'}.
function nginxRange(h, len) {
    if (h.slice(0, 6).toLowerCase() !== 'bytes=') return { kind: 'ignore' };
    const s = h;
    let p = 6;
    const ranges = [];
    let total = 0;
    const digit = (c) => c !== undefined && c >= '0' && c <= '9';
    const bad = { kind: 'unsatisfiable' };
    for (;;) {
        let start = 0, end = 0, suffix = false, open = false;
        while (s[p] === ' ') p++;
        if (s[p] !== '-') {
            if (!digit(s[p])) return bad;
            while (digit(s[p])) {
                start = start * 10 + (s.charCodeAt(p++) - 48);
                if (start > Number.MAX_SAFE_INTEGER / 10) return bad;
            }
            while (s[p] === ' ') p++;
            if (s[p++] !== '-') return bad;
            while (s[p] === ' ') p++;
            if (s[p] === ',' || p >= s.length) { end = len; open = true; }
        } else {
            suffix = true;
            p++;
        }
        if (!open) {
            if (!digit(s[p])) return bad;
            while (digit(s[p])) {
                end = end * 10 + (s.charCodeAt(p++) - 48);
                if (end > Number.MAX_SAFE_INTEGER / 10) return bad;
            }
            while (s[p] === ' ') p++;
            if (s[p] !== ',' && p < s.length) return bad;
            if (suffix) {
                start = end < len ? len - end : 0;
                end = len - 1;
            }
            if (end >= len) end = len; else end++;
        }
        if (start < end) {
            ranges.push([start, end]);
            total += end - start;
        } else if (start === 0) {
            return { kind: 'ignore' };
        }
        if (s[p++] !== ',') break;
    }
    if (ranges.length === 0) return bad;
    if (total > len) return { kind: 'ignore' };
    return { kind: 'ok', start: ranges[0][0], end: ranges[0][1] };
}

// Approximations of the ajv error texts muskie returns for bad MPU bodies.
function validateCreateBody(b) {
    if (b === null || typeof b !== 'object' || Array.isArray(b)) return 'data should be object';
    if (!Object.prototype.hasOwnProperty.call(b, 'objectPath')) return "data should have required property 'objectPath'";
    if (typeof b.objectPath !== 'string') return 'data.objectPath should be string';
    if (b.objectPath.length < 1) return 'data.objectPath should NOT be shorter than 1 characters';
    if (b.headers !== undefined) {
        if (b.headers === null || typeof b.headers !== 'object' || Array.isArray(b.headers)) return 'data.headers should be object';
        for (const k of Object.keys(b.headers)) {
            if (/content-length/.test(k)) {
                const v = b.headers[k];
                if (typeof v !== 'number') return "data.headers['" + k + "'] should be number";
                if (v < 0) return "data.headers['" + k + "'] should be >= 0";
            }
        }
        for (const k of ['if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since']) {
            if (Object.prototype.hasOwnProperty.call(b.headers, k)) return 'data.headers should NOT be valid';
        }
    }
    return null;
}

function validateCommitBody(b) {
    if (b === null || typeof b !== 'object' || Array.isArray(b)) return 'data should be object';
    if (!Object.prototype.hasOwnProperty.call(b, 'parts')) return "data should have required property 'parts'";
    if (!Array.isArray(b.parts)) return 'data.parts should be array';
    if (b.parts.length > MAX_NUM_PARTS) return 'data.parts should NOT have more than ' + MAX_NUM_PARTS + ' items';
    for (let i = 0; i < b.parts.length; i++) {
        if (typeof b.parts[i] !== 'string') return 'data.parts[' + i + '] should be string';
        if (b.parts[i].length < 1) return 'data.parts[' + i + '] should NOT be shorter than 1 characters';
    }
    return null;
}

// ------------------------------------------------------------------ the server

class Simulator {
    constructor(opts, cfg) {
        this.opts = opts;
        this.accounts = loadAccounts(cfg);
        this.store = new Store(path.resolve(opts.root));
        this.logStream = opts.log ? fs.createWriteStream(opts.log, { flags: 'a' }) : null;
        this.resetStats();
    }

    resetStats() {
        this.stats = {
            since: new Date().toISOString(),
            total: 0,
            byMethod: {},
            byStatus: {},
            byOperation: {},
            byMethodPath: {},
            bytesIn: 0,
            bytesOut: 0,
            recent: []
        };
    }

    // ---------------------------------------------------------- request entry

    handle(req, res, expectContinue) {
        const ctx = {
            sim: this,
            req: req,
            res: res,
            id: crypto.randomUUID(),
            start: Date.now(),
            expectContinue: !!expectContinue,
            operation: null,
            bytesIn: 0,
            bytesOut: 0,
            callerLogin: '-'
        };
        const qi = req.url.indexOf('?');
        ctx.pathPreSanitize = qi >= 0 ? req.url.slice(0, qi) : req.url;
        ctx.rawQuery = qi >= 0 ? req.url.slice(qi + 1) : '';
        ctx.path = sanitizePath(ctx.pathPreSanitize);
        ctx.url = ctx.path + (qi >= 0 ? '?' + ctx.rawQuery : '');
        ctx.query = querystring.parse(ctx.rawQuery);

        res.setHeader('Date', httpDate(Date.now()));
        res.setHeader('Server', 'Manta');
        res.setHeader('x-request-id', ctx.id);
        res.setHeader('x-server-name', HOSTNAME);
        const ua = req.headers['user-agent'];
        if (ua && /^curl.+/.test(ua)) res.setHeader('Connection', 'close');

        const origWrite = res.write;
        const origEnd = res.end;
        res.write = function (chunk, enc, cb) {
            if (chunk && typeof chunk !== 'function') ctx.bytesOut += Buffer.byteLength(chunk, typeof enc === 'string' ? enc : undefined);
            return origWrite.apply(res, arguments);
        };
        res.end = function (chunk, enc, cb) {
            if (chunk && typeof chunk !== 'function' && req.method !== 'HEAD') {
                ctx.bytesOut += Buffer.byteLength(chunk, typeof enc === 'string' ? enc : undefined);
            }
            return origEnd.apply(res, arguments);
        };
        let recorded = false;
        const record = () => {
            if (recorded) return;
            recorded = true;
            this.record(ctx);
        };
        res.on('finish', record);
        res.on('close', record);

        this.dispatch(ctx).catch((err) => this.sendError(ctx, err));
    }

    record(ctx) {
        const st = this.stats;
        const status = ctx.res.statusCode;
        const m = ctx.req.method;
        st.total++;
        st.byMethod[m] = (st.byMethod[m] || 0) + 1;
        st.byStatus[status] = (st.byStatus[status] || 0) + 1;
        if (ctx.operation) st.byOperation[ctx.operation] = (st.byOperation[ctx.operation] || 0) + 1;
        const mp = m + ' ' + ctx.path;
        st.byMethodPath[mp] = (st.byMethodPath[mp] || 0) + 1;
        st.bytesIn += ctx.bytesIn;
        st.bytesOut += ctx.bytesOut;
        st.recent.push({ method: m, path: ctx.path, status: status, operation: ctx.operation });
        if (st.recent.length > 1000) st.recent.shift();
        if (this.logStream) {
            const q = ctx.rawQuery ? '?' + ctx.rawQuery.replace(/(^|&)signature=[^&]*/, '$1signature=REDACTED') : '';
            this.logStream.write([new Date().toISOString(), ctx.id, m, ctx.pathPreSanitize + q, status,
                ctx.operation || '-', ctx.callerLogin, 'in=' + ctx.bytesIn, 'out=' + ctx.bytesOut,
                (Date.now() - ctx.start) + 'ms'].join(' ') + '\n');
        }
    }

    // ---------------------------------------------------------- responses

    writeHead(ctx, status, headers) {
        ctx.res.setHeader('x-response-time', String(Date.now() - ctx.start));
        ctx.res.writeHead(status, headers);
    }

    sendJSON(ctx, status, obj, headers) {
        const data = JSON.stringify(obj);
        const h = Object.assign({}, headers || {}, {
            'Content-Length': Buffer.byteLength(data),
            'Content-MD5': crypto.createHash('md5').update(data).digest('base64'),
            'Content-Type': 'application/json'
        });
        this.writeHead(ctx, status, h);
        ctx.res.end(data);
    }

    sendEmpty(ctx, status, headers) {
        const h = Object.assign({}, headers || {});
        if (status !== 204 && status !== 304) h['Content-Length'] = 0;
        this.writeHead(ctx, status, h);
        ctx.res.end();
    }

    sendError(ctx, err) {
        const res = ctx.res;
        if (!(err instanceof MantaError)) {
            process.stderr.write('manta-sim: internal error: ' + (err && err.stack || err) + '\n');
            err = errors.internal();
        }
        if (res.headersSent) {
            res.destroy();
            return;
        }
        if (err.status === 408) res.setHeader('Connection', 'close');
        if (err.status === 405 && err.noBody) {
            this.sendEmpty(ctx, 405, err.headers);
        } else {
            this.sendJSON(ctx, err.status, { code: err.code, message: err.message }, err.headers);
        }
        // muskie: dump any remaining request data so the socket is not leaked.
        if ((ctx.req.method === 'PUT' || ctx.req.method === 'POST') && !ctx.req.complete) ctx.req.resume();
    }

    // ---------------------------------------------------------- routing

    async dispatch(ctx) {
        const req = ctx.req;
        const p = ctx.path;
        const m = req.method;

        if (p === '/__sim/stats' || p === '/__sim/stats/reset') return this.simStats(ctx);

        // Route lookup comes first in restify: unknown paths are 404 before auth.
        let route = null;
        const segs = p.split('/');
        if (/^\/[^/]+$/.test(p)) {
            route = { kind: 'root', auth: true };
        } else if (segs[2] === 'uploads' && STORAGE_ROUTE.test(p)) {
            route = this.uploadsRoute(ctx, segs);
        }
        if (!route && STORAGE_ROUTE.test(p)) {
            if (['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS'].indexOf(m) === -1) {
                throw Object.assign(errors.methodNotAllowed(m), { headers: { Allow: 'OPTIONS, GET, HEAD, PUT, DELETE' } });
            }
            route = { kind: 'storage' };
        }
        if (!route) throw errors.doesNotExist(p);
        return this.run(ctx, route);
    }

    uploadsRoute(ctx, segs) {
        const m = ctx.req.method;
        const n = segs.length;  // ['', acct, 'uploads', ...]
        const not = () => ({ kind: 'methodNotAllowed' });
        if (n === 3) {
            if (m === 'POST') return { kind: 'mpuCreate' };
            if (m === 'PUT') return not();
            return null;  // GET/HEAD listing, DELETE: storage handlers
        }
        const uuidRe = /^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$/;
        if ((n === 4 || n === 5) && uuidRe.test(segs[3]) &&
            ['GET', 'PUT', 'HEAD', 'DELETE', 'POST'].indexOf(m) !== -1) {
            return { kind: 'mpuRedirect', id: segs[3], partNum: n === 5 ? segs[4] : undefined };
        }
        const hex = /^[0-9a-f]+$/;
        if (n === 6 && hex.test(segs[3])) {
            const op = segs[5];
            if (op === 'state') return m === 'GET' ? { kind: 'mpuState' } : not();
            if (op === 'abort') return m === 'POST' ? { kind: 'mpuAbort' } : not();
            if (op === 'commit') return m === 'POST' ? { kind: 'mpuCommit' } : not();
            // /:account/uploads/[0-f]+/:id/:partNum
            if (m === 'PUT') return { kind: 'mpuPart' };
            if (m === 'DELETE' || m === 'GET' || m === 'POST') return { kind: 'mpuOperatorOnly', op: m };
            return null;  // HEAD: storage handler
        }
        if (n === 5 && hex.test(segs[3])) {
            if (m === 'DELETE' || m === 'PUT' || m === 'POST') return { kind: 'mpuOperatorOnly', op: m };
            return null;
        }
        return null;
    }

    async run(ctx, route) {
        this.authenticate(ctx);
        if (route.kind === 'methodNotAllowed') {
            ctx.operation = 'MethodNotAllowed';
            throw Object.assign(E(405, 'MethodNotAllowed', ''), { noBody: true });
        }
        switch (route.kind) {
        case 'root': return this.rootDir(ctx);
        case 'storage': return this.storage(ctx);
        case 'mpuCreate': return this.mpuCreate(ctx);
        case 'mpuRedirect': return this.mpuRedirect(ctx, route);
        case 'mpuState': return this.mpuState(ctx);
        case 'mpuAbort': return this.mpuAbort(ctx);
        case 'mpuCommit': return this.mpuCommit(ctx);
        case 'mpuPart': return this.mpuPart(ctx);
        case 'mpuOperatorOnly': return this.mpuOperatorOnly(ctx, route);
        default: throw errors.internal();
        }
    }

    simStats(ctx) {
        ctx.operation = 'SimStats';
        if (ctx.path === '/__sim/stats/reset' || ctx.req.method === 'DELETE') {
            if (ctx.req.method !== 'POST' && ctx.req.method !== 'DELETE') throw errors.methodNotAllowed(ctx.req.method);
            this.resetStats();
            return this.sendEmpty(ctx, 204);
        }
        const snapshot = JSON.parse(JSON.stringify(this.stats));
        snapshot.objects = Array.from(this.store.entries.values()).filter((md) => md.type === 'object').length;
        snapshot.directories = Array.from(this.store.entries.values()).filter((md) => md.type === 'directory').length;
        this.sendJSON(ctx, 200, snapshot);
    }

    // ---------------------------------------------------------- authentication
    // restify.dateParser, common.authorizationParser, auth.checkIfPresigned,
    // then auth.authenticationHandler: preSignedUrl, checkAuthzScheme,
    // parseAuthTokenHandler, signatureHandler, parseKeyId, loadCaller,
    // verifySignature, loadOwner, getActiveRoles.

    authenticate(ctx) {
        const req = ctx.req;
        const skew = this.opts.skew;

        const date = req.headers.date;
        if (date) {
            const sent = new Date(date).getTime();
            if ((Date.now() - sent) > skew * 1000) {
                throw E(400, 'RequestExpired', 'Date header ' + date + ' is too old');
            }
        }

        const authorization = {};
        const ah = req.headers.authorization;
        if (ah) {
            const pieces = ah.split(' ', 2);
            if (pieces.length !== 2) throw E(400, 'InvalidHeader', 'Invalid Authorization header');
            authorization.scheme = pieces[0];
            authorization.credentials = pieces[1];
            if (pieces[0].toLowerCase() === 'signature') {
                // restify's sanitizePath already rewrote req.url when muskie parses.
                const view = { headers: req.headers, method: req.method, url: ctx.url, httpVersion: req.httpVersion };
                try {
                    authorization.signature = httpSignature.parseRequest(view, { clockSkew: skew });
                } catch (e) {
                    throw E(400, 'InvalidHeader', 'Invalid Signature Authorization header: ' + e.message);
                }
            }
        }

        const q = ctx.query;
        ctx.presigned = !ah && !!(q.expires || q.signature || q.keyId || q.algorithm);
        ctx.auth = {};
        if (ctx.presigned) this.preSignedUrl(ctx);
        const auth = ctx.auth;

        if (authorization.scheme) {
            const scheme = authorization.scheme.toLowerCase();
            if (scheme !== 'signature' && scheme !== 'token') {
                throw E(403, 'AuthorizationSchemeNotAllowed', scheme + " is not allowed (use 'signature')");
            }
            if (scheme === 'token') {
                throw E(403, 'InvalidAuthenticationToken', 'the authentication token you provided is malformed');
            }
            const alg = authorization.signature.algorithm;
            if (SIGN_ALG[alg] !== true) {
                throw E(401, 'InvalidAlgorithm', alg + ' is not a supported signing algorithm. ' +
                    'Supported algorithms are ' + Object.keys(SIGN_ALG).join(', '));
            }
            auth.signature = authorization.signature;
            auth.callerKey = authorization.signature.keyId;
        }

        // parseKeyId
        if (auth.callerKey) {
            const k = String(auth.callerKey).split('/');
            try {
                if (k.length === 4) {
                    if (k[2] !== 'keys') throw errors.invalidKeyId();
                    auth.keyId = decodeURIComponent(k[3]);
                    auth.account = decodeURIComponent(k[1]);
                } else if (k.length === 5) {
                    if (k[3] !== 'keys') throw errors.invalidKeyId();
                    auth.keyId = decodeURIComponent(k[4]);
                    auth.account = decodeURIComponent(k[1]);
                    auth.user = decodeURIComponent(k[2]);
                    if (auth.user === '') throw errors.invalidKeyId();
                } else {
                    throw errors.invalidKeyId();
                }
            } catch (e) {
                throw e instanceof MantaError ? e : errors.invalidKeyId();
            }
            if (auth.keyId === '' || auth.account === '') throw errors.invalidKeyId();
        }

        // loadCaller
        let caller;
        if (auth.account) {
            const acct = this.accounts.get(auth.account);
            if (!acct) throw errors.accountDoesNotExist(auth.account);
            let user = null;
            if (auth.user) {
                user = acct.users.get(auth.user);
                if (!user) throw errors.userDoesNotExist(auth.account, auth.user);
            }
            if (!acct.approved && !acct.isOperator) throw errors.accountBlocked(acct.login);
            caller = { account: acct, user: user };
        } else if (PUBLIC_STOR_PATH.test(ctx.path)) {
            caller = { account: null, user: null, publicAnonymous: true };
        } else {
            caller = { account: null, user: null, anonymous: true };
        }
        ctx.caller = caller;
        ctx.callerLogin = caller.account ? caller.account.login + (caller.user ? '/' + caller.user.login : '') : 'anonymous';

        // verifySignature
        if (auth.signature) {
            const keys = caller.user ? caller.user.keys : caller.account.keys;
            const key = keys.get(auth.keyId);
            if (!key) {
                throw errors.keyDoesNotExist(caller.account.login, auth.keyId, caller.user ? caller.user.login : null);
            }
            let ok;
            try {
                ok = httpSignature.verifySignature(auth.signature, key);
            } catch (e) {
                throw errors.internal();
            }
            if (!ok) throw errors.invalidSignature();
        }

        // loadOwner
        let ownerLogin;
        try {
            ownerLogin = decodeURIComponent(ctx.path.split('/', 2).pop());
        } catch (e) {
            throw errors.invalidPath(ctx.path);
        }
        const owner = this.accounts.get(ownerLogin);
        if (!owner) throw errors.accountDoesNotExist(ownerLogin);
        if (caller.anonymous) throw errors.authorization('anonymous', ctx.path);
        if (!owner.approved && !owner.isOperator && (caller.user || !(caller.account && caller.account.isOperator))) {
            throw errors.accountBlocked(ownerLogin);
        }
        ctx.owner = owner;

        // getActiveRoles
        let requested = typeof auth.role === 'string' && ctx.presigned ? auth.role : req.headers.role;
        if (requested) {
            if (!(requested === '*' && caller.user)) {
                requested.split(/\s*,\s*/).forEach((name) => {
                    const known = caller.account && caller.account.roles.indexOf(name) !== -1 &&
                        (!caller.user || caller.user.roles.indexOf(name) !== -1);
                    if (!known) throw errors.invalidRole(name);
                });
            }
        }
    }

    preSignedUrl(ctx) {
        const req = ctx.req;
        const q = ctx.query;
        const methods = String(q.method || req.method).split(/\s*,\s*/);
        const now = Math.floor(Date.now() / 1000);
        methods.sort();
        if (methods.indexOf(req.method) === -1) throw errors.presigned(req.method + ' was not a signed method');
        const missing = ['algorithm', 'expires', 'keyId', 'signature'].filter((k) => !q[k]);
        if (missing.length) throw errors.presigned('parameters "' + missing.join(', ') + '" are required');
        const expires = parseInt(q.expires, 10);
        if (now > expires) throw errors.presigned('request expired');
        const parsed = {
            scheme: 'Signature',
            algorithm: String(q.algorithm).toUpperCase(),
            params: { keyId: q.keyId, signature: q.signature, role: q.role, 'role-tag': q['role-tag'] },
            signature: q.signature,
            signingString: ''
        };
        parsed.signingString =
            methods.join(',') + '\n' +
            req.headers.host + '\n' +
            ctx.pathPreSanitize + '\n' +
            Object.keys(q).sort((a, b) => a.localeCompare(b))
                .filter((k) => k.toLowerCase() !== 'signature')
                .map((k) => rfc3986(k) + '=' + rfc3986(q[k]))
                .join('&');
        if (SIGN_ALG[parsed.algorithm] !== true) {
            throw errors.presigned(parsed.algorithm + ' is not a supported signing algorithm');
        }
        ctx.auth = { role: q.role || '', 'role-tag': q['role-tag'] || '', callerKey: q.keyId, signature: parsed };
    }

    // libmanta.authorize, reduced to what this simulator models: an account
    // may do anything under its own tree, operators anywhere, sub-users only
    // the actions listed for them in the config, anonymous callers only reads
    // under /:account/public.
    authorize(ctx, action, p) {
        const caller = ctx.caller;
        if (caller.publicAnonymous) {
            const read = action === 'getobject' || action === 'getdirectory';
            if (read && PUBLIC_STOR_PATH.test(p)) return;
            throw errors.authorization('anonymous', p);
        }
        const login = caller.user ? caller.account.login + '/' + caller.user.login : caller.account.login;
        if (caller.account.isOperator) return;
        if (caller.account.login !== ctx.owner.login) throw errors.authorization(login, p);
        if (REPORTS_STOR_PATH.test(p) && /^(put|delete)/.test(action)) throw errors.authorization(login, p);
        if (caller.user) {
            const acts = caller.user.actions;
            if (acts.indexOf('*') === -1 && acts.indexOf(action) === -1) throw errors.authorization(login, p);
        }
    }

    // ---------------------------------------------------------- storage

    setupKey(ctx, p) {
        const key = normalizeKey(p);
        if (key === null) throw errors.invalidPath(p);
        return key;
    }

    // common.getMetadataHandler + auth.storageContext
    loadMetadata(ctx, p) {
        const req = ctx.req;
        const key = this.setupKey(ctx, p);
        ctx.key = key;
        ctx.reqPath = p.replace(/\/*$/, '') || '/';
        ctx.isRoot = isRootDirectory(key);
        ctx.parentKey = ctx.isRoot ? null : dirnameOf(key);
        const md = this.store.get(key);
        ctx.md = md;
        ctx.parentMd = undefined;
        if (!(req.method === 'GET' || req.method === 'HEAD' || req.method === 'DELETE' || ctx.isRoot)) {
            const pmd = this.store.get(ctx.parentKey);
            ctx.parentMd = pmd || null;
        }
        if (md) {
            if (md.etag) ctx.res.setHeader('Etag', md.etag);
            if (md.mtime) ctx.res.setHeader('Last-Modified', httpDate(md.mtime));
        }
        if (!md && ctx.parentMd === undefined) throw errors.resourceNotFound(ctx.reqPath);
        if (!md && !(ctx.parentMd && ctx.parentMd.type)) throw errors.dirDoesNotExist(ctx.reqPath);
    }

    ensureParent(ctx) {
        if (ctx.isRoot || isRootDirectory(ctx.parentKey)) return;
        if (!ctx.parentMd || !ctx.parentMd.type) throw errors.dirDoesNotExist(ctx.reqPath);
        if (ctx.parentMd.type !== 'directory') throw errors.parentNotDir(ctx.reqPath);
    }

    addCustomHeaders(ctx, md) {
        const h = md.headers || {};
        const origin = ctx.req.headers.origin;
        Object.keys(h).forEach((k) => {
            let add = false;
            let val = h[k];
            if (origin && CORS_RES_HDRS.indexOf(k) !== -1) {
                if (k === 'access-control-allow-origin') {
                    if (String(val).split(/\s*,\s*/).some((v) => {
                        if (v === origin || v === '*') { val = origin; return true; }
                        return false;
                    })) add = true;
                    else CORS_RES_HDRS.forEach((x) => ctx.res.removeHeader(x));
                } else if (k === 'access-control-allow-methods') {
                    if (String(val).split(/\s*,\s*/).some((v) => v === ctx.req.method)) add = true;
                    else CORS_RES_HDRS.forEach((x) => ctx.res.removeHeader(x));
                } else if (k === 'access-control-expose-headers') {
                    add = true;
                }
            } else {
                add = true;
            }
            if (add) ctx.res.setHeader(k, val);
        });
    }

    // common.createMetadata: the headers muskie keeps with an entry.
    savedHeaders(headers) {
        const out = {};
        CORS_RES_HDRS.forEach((k) => { if (headers[k]) out[k] = headers[k]; });
        if (headers['cache-control']) out['Cache-Control'] = headers['cache-control'];
        if (headers['surrogate-key']) out['Surrogate-Key'] = headers['surrogate-key'];
        let size = 0;
        Object.keys(headers).forEach((k) => {
            if (/^m-\w+/.test(k)) {
                size += Buffer.byteLength(String(headers[k]));
                if (size < MAX_HDRSIZE) out[k] = headers[k];
            }
        });
        return out;
    }

    async rootDir(ctx) {
        const m = ctx.req.method;
        ctx.operation = { GET: 'GetRootDir', HEAD: 'HeadRootDir', PUT: 'PutRootDir', POST: 'PostRootDir', DELETE: 'DeleteRootDir' }[m] || 'RootDir';
        this.loadMetadata(ctx, ctx.path);
        this.authorize(ctx, m === 'PUT' ? 'putdirectory' : (m === 'DELETE' ? 'deletedirectory' : 'getdirectory'), ctx.reqPath);
        if (m !== 'GET' && m !== 'HEAD') throw errors.rootDir(m, ctx.reqPath);
        let names = ROOT_LISTING.slice();
        const marker = ctx.query.marker;
        if (marker) while (names.length > 0 && names[0] <= marker) names.shift();
        this.writeHead(ctx, 200, { 'Content-Type': DIR_CONTENT_TYPE, 'Result-Set-Size': names.length });
        if (m !== 'HEAD') {
            names.forEach((n) => ctx.res.write(JSON.stringify({ name: n, type: 'directory', mtime: '2013-05-22T17:39:43.714Z' }) + '\n'));
        }
        ctx.res.end();
    }

    async storage(ctx) {
        const req = ctx.req;
        const m = req.method;
        const ctRaw = req.headers['content-type'];
        if (ctRaw && !/.+\/.+/.test(ctRaw)) req.headers['content-type'] = MIME[ctRaw.toLowerCase()] || 'application/octet-stream';

        const ct = String(req.headers['content-type'] || '').toLowerCase().replace(/\s+/g, '');
        if (m === 'PUT') {
            ctx.operation = ct === 'application/json;type=directory' ? 'PutDirectory' :
                (ct === 'application/json;type=link' ? 'PutLink' : 'PutObject');
        } else {
            ctx.operation = { GET: 'GetStorage', HEAD: 'HeadStorage', DELETE: 'DeleteStorage', OPTIONS: 'OptionsStorage' }[m];
        }
        this.loadMetadata(ctx, ctx.path);
        const md = ctx.md;

        if (m === 'OPTIONS') {
            this.authorize(ctx, 'get' + (md ? md.type : 'object'), ctx.reqPath);
            return this.sendEmpty(ctx, 200, { Allow: 'OPTIONS, GET, HEAD, PUT, DELETE' });
        }
        if (m === 'GET' || m === 'HEAD') {
            this.authorize(ctx, 'get' + md.type, ctx.reqPath);
            if (md.type === 'directory') return this.getDirectory(ctx);
            return this.getObject(ctx);
        }
        if (m === 'DELETE') {
            this.authorize(ctx, 'delete' + md.type, ctx.reqPath);
            if (md.type === 'directory') return this.deleteDirectory(ctx);
            return this.deleteObject(ctx);
        }
        // PUT: the route is chosen by content type.
        if (ct === 'application/json;type=directory') {
            this.authorize(ctx, 'putdirectory', ctx.reqPath);
            return this.putDirectory(ctx);
        }
        if (ct === 'application/json;type=link') {
            this.authorize(ctx, 'putlink', ctx.reqPath);
            throw E(403, 'SnaplinksDisabledError', 'Manta v2 does not support SnapLinks.');
        }
        this.authorize(ctx, 'putobject', ctx.reqPath);
        return this.putObject(ctx);
    }

    // dir.js getDirectoryCount + getDirectory + common.readdir
    getDirectory(ctx) {
        const req = ctx.req;
        const count = this.store.childCount(ctx.key);
        let entries = null;
        if (req.method !== 'HEAD') entries = this.readdir(ctx, ctx.key);
        this.addCustomHeaders(ctx, ctx.md);
        this.writeHead(ctx, 200, { 'Content-Type': DIR_CONTENT_TYPE, 'Result-Set-Size': count });
        if (entries) entries.forEach((e) => ctx.res.write(JSON.stringify(e) + '\n'));
        ctx.res.end();
    }

    readdir(ctx, dirKey) {
        const params = ctx.query;
        const one = (v) => (Array.isArray(v) ? v[v.length - 1] : v);
        const nosort = one(params.sort) === 'none';
        const ownerCheck = one(params.skip_owner_check) !== 'true';
        if (!ctx.caller.account || !ctx.caller.account.isOperator) {
            const bad = [];
            if (nosort) bad.push('sort=none');
            if (!ownerCheck) bad.push('skip_owner_check=true');
            if (bad.length) {
                throw E(403, 'QueryParameterForbidden',
                    'Use of these query parameters is restricted to operators: ' + bad.join(', '));
            }
        }
        const l = parseInt(one(params.limit) || 256, 10);
        if (!(l > 0 && l <= 1024)) throw errors.invalidLimit(l);

        let list = this.store.childEntries(dirKey);
        const hasDir = params.dir !== undefined || params.directory !== undefined;
        const hasObj = params.obj !== undefined || params.object !== undefined;
        if ((hasDir || hasObj) && !(hasDir && hasObj)) {
            const t = hasDir ? 'directory' : 'object';
            list = list.filter((md) => md.type === t);
        }
        const reverse = one(params.sort_order) === 'reverse';
        const tsort = one(params.sort) === 'mtime';
        let marker = one(params.marker);
        let asc;
        if (tsort) {
            asc = reverse;
            list.sort((a, b) => (a.mtime - b.mtime) || byteCompare(keyName(a.key), keyName(b.key)));
        } else {
            asc = !reverse;
            list.sort((a, b) => byteCompare(keyName(a.key), keyName(b.key)));
        }
        if (!asc) list.reverse();
        if (marker && !nosort) {
            if (tsort) {
                const t = Date.parse(marker);
                if (!Number.isFinite(t)) throw errors.invalidParameter('marker', marker);
                list = list.filter((md) => (asc ? md.mtime >= t : md.mtime <= t));
            } else {
                list = list.filter((md) => {
                    const c = byteCompare(keyName(md.key), marker);
                    return asc ? c >= 0 : c <= 0;
                });
            }
        }
        return list.slice(0, l).map((md) => {
            const e = {
                name: keyName(md.key),
                etag: md.etag,
                size: md.contentLength,
                type: md.type,
                contentType: md.contentType,
                contentDisposition: md.contentDisposition,
                contentMD5: md.contentMD5,
                mtime: new Date(md.mtime).toISOString()
            };
            if (e.type === 'object') e.durability = md.sharks || 0;
            return e;
        });
    }

    // obj.js getObjectHandler: negotiateContent, conditionalRequest,
    // verifyRange, streamFromSharks
    getObject(ctx) {
        const req = ctx.req;
        const res = ctx.res;
        const md = ctx.md;
        if (!accepts(req.headers.accept, md.contentType)) {
            throw E(406, 'NotAcceptable', ctx.reqPath + ' accepts ' + md.contentType);
        }
        if (conditional(ctx, md) === 'not-modified') return this.sendEmpty(ctx, 304);
        const range = req.headers.range;
        if (range !== undefined && range.indexOf(',') !== -1) {
            throw E(501, 'NotImplemented', 'multi-range requests not supported');
        }
        this.addCustomHeaders(ctx, md);
        if (md.contentDisposition) res.setHeader('Content-Disposition', md.contentDisposition);
        if (md.contentLength === 0 || req.method === 'HEAD') {
            this.writeHead(ctx, 200, {
                'Durability-Level': md.sharks || 0,
                'Content-Length': md.contentLength,
                'Content-MD5': md.contentMD5,
                'Content-Type': md.contentType
            });
            return res.end();
        }
        const size = md.contentLength;
        let start = 0, end = size, status = 200;
        const h = { 'Durability-Level': md.sharks || 0 };
        if (range !== undefined) {
            // The storage node (nginx) answers ranged requests with its own
            // Content-Type and Content-Range, which muskie passes through.
            const r = nginxRange(range, size);
            if (r.kind === 'unsatisfiable') {
                throw E(416, 'RequestedRangeNotSatisfiable', '', { 'Content-Range': 'bytes */' + size });
            }
            h['Content-Type'] = 'application/octet-stream';
            if (r.kind === 'ok') {
                start = r.start;
                end = r.end;
                status = 206;
                h['Content-Range'] = 'bytes ' + start + '-' + (end - 1) + '/' + size;
            }
        } else {
            h['Accept-Ranges'] = 'bytes';
            h['Content-Type'] = md.contentType;
            h['Content-MD5'] = md.contentMD5;
        }
        h['Content-Length'] = end - start;
        const file = this.store.dataPath(md.objectId);
        try {
            fs.accessSync(file, fs.constants.R_OK);
        } catch (e) {
            throw errors.internal();
        }
        this.writeHead(ctx, status, h);
        const stream = fs.createReadStream(file, { start: start, end: end - 1 });
        stream.on('error', () => res.destroy());
        res.on('close', () => stream.destroy());
        stream.pipe(res);
    }

    deleteObject(ctx) {
        if (ctx.isRoot) throw errors.rootDir('DELETE', ctx.reqPath);
        if (conditional(ctx, ctx.md) === 'not-modified') return this.sendEmpty(ctx, 304);
        this.store.del(ctx.key);
        this.sendEmpty(ctx, 204);
    }

    deleteDirectory(ctx) {
        if (ctx.isRoot) throw errors.rootDir('DELETE', ctx.reqPath);
        if (this.store.childCount(ctx.key) > 0) throw errors.dirNotEmpty(ctx.reqPath);
        this.store.del(ctx.key);
        this.sendEmpty(ctx, 204);
    }

    putDirectory(ctx) {
        const req = ctx.req;
        this.ensureParent(ctx);
        const prev = ctx.md;
        const headers = this.savedHeaders(req.headers);
        const extra = {};
        if (req.headers.origin) extra['Access-Control-Allow-Origin'] = req.headers.origin;
        if (prev && prev.type === 'directory' && !prev.root &&
            JSON.stringify(prev.headers || {}) === JSON.stringify(headers)) {
            return this.sendEmpty(ctx, 204, extra);
        }
        if (prev && prev.root && Object.keys(headers).length === 0) return this.sendEmpty(ctx, 204, extra);
        this.store.put(ctx.key, {
            type: 'directory',
            key: ctx.key,
            dirname: dirnameOf(ctx.key),
            mtime: Date.now(),
            owner: ctx.owner.login,
            headers: headers
        });
        this.sendEmpty(ctx, 204, extra);
    }

    // obj.js parseArguments (object case); returns {zero, maxBytes, copies}
    parseObjectArguments(ctx) {
        const req = ctx.req;
        const chunked = /chunked/i.test(String(req.headers['transfer-encoding'] || ''));
        const out = { zero: false, maxBytes: undefined, copies: DEF_NUM_COPIES };
        if (chunked) {
            const mcl = req.headers['max-content-length'];
            const len = parseInt(mcl !== undefined ? mcl : this.opts.maxStreamingSize, 10);
            if (len < 0) throw errors.maxContentLength(len);
            out.maxBytes = len;
        } else {
            const clh = req.headers['content-length'];
            const len = clh ? parseInt(clh, 10) : undefined;
            if (len < 0) throw errors.contentLength();
            if ((len || 0) === 0) out.zero = true;
            out.maxBytes = len || 0;
        }
        const copies = parseInt(req.headers['durability-level'] || req.headers['x-durability-level'] || DEF_NUM_COPIES, 10);
        if (!(copies >= DEF_MIN_COPIES && copies <= DEF_MAX_COPIES)) throw errors.durability();
        out.copies = copies;
        return out;
    }

    // obj.js putObjectHandler: conditionalRequest, ensureNotRoot,
    // parseArguments, ensureNotDirectory, ensureParent, enforceDirectoryCount,
    // stream to storage (Content-MD5 checked), saveMetadata.
    async putObject(ctx) {
        const req = ctx.req;
        conditional(ctx, ctx.md);
        if (ctx.isRoot) {
            const ct = req.headers['content-type'];
            if (ct && ct !== 'application/x-json-stream; type=directory') throw errors.rootDir('PUT', ctx.reqPath);
        }
        if (ctx.md && ctx.md.type === 'directory') {
            for (const k of ['content-length', 'content-md5', 'durability-level']) {
                if (req.headers[k]) throw errors.invalidUpdate(k, ' on a directory');
            }
            throw errors.dirOperation(ctx.reqPath, req.method);
        }
        const args = this.parseObjectArguments(ctx);
        this.ensureParent(ctx);
        if (this.store.childCount(ctx.parentKey) > MAX_DIRENTS) {
            throw E(409, 'DirectoryLimitExceeded', ctx.parentKey + ' cannot exceed 1,000,000 entries');
        }
        await this.storeObject(ctx, ctx.key, args, this.savedHeaders(req.headers));
    }

    // The streaming and saveMetadata steps, shared by PUT object and MPU parts.
    async storeObject(ctx, key, args, headers) {
        const req = ctx.req;
        let size = 0, md5 = ZERO_BYTE_MD5, tmp = null;
        if (!args.zero) {
            const got = await this.receiveBody(ctx, args.maxBytes);
            tmp = got.tmp;
            size = got.size;
            md5 = got.md5;
            const sent = req.headers['content-md5'];
            if (sent) {
                const bytes = Buffer.from(sent, 'base64');
                if (!/^[A-Za-z0-9+/]+={0,2}$/.test(sent) || bytes.length !== 16) {
                    fs.rm(tmp, { force: true }, () => {});
                    throw E(400, 'BadRequest', 'Content-MD5 invalid');
                }
                if (!bytes.equals(Buffer.from(md5, 'base64'))) {
                    fs.rm(tmp, { force: true }, () => {});
                    throw errors.checksum(md5, sent);
                }
            }
        } else {
            req.resume();
        }
        const objectId = crypto.randomUUID();
        if (tmp && size > 0) this.store.adoptData(tmp, objectId);
        else if (tmp) fs.rm(tmp, { force: true }, () => {});
        const now = Date.now();
        const md = {
            type: 'object',
            key: key,
            dirname: dirnameOf(key),
            mtime: now,
            owner: ctx.owner.login,
            headers: headers,
            contentLength: size,
            contentMD5: md5,
            contentType: req.headers['content-type'] || 'application/octet-stream',
            contentDisposition: req.headers['content-disposition'],
            objectId: objectId,
            etag: objectId,
            sharks: size === 0 ? 0 : args.copies
        };
        this.store.put(key, md);
        const h = { Etag: md.etag, 'Last-Modified': httpDate(now), 'Computed-MD5': md5 };
        if (req.headers.origin) h['Access-Control-Allow-Origin'] = req.headers.origin;
        this.sendEmpty(ctx, 204, h);
    }

    receiveBody(ctx, maxBytes) {
        const req = ctx.req;
        const res = ctx.res;
        const tmp = this.store.tmpFile();
        return new Promise((resolve, reject) => {
            const out = fs.createWriteStream(tmp);
            const hash = crypto.createHash('md5');
            let size = 0;
            let settled = false;
            let discarding = false;
            let timer = null;
            const arm = () => {
                if (timer) clearTimeout(timer);
                timer = setTimeout(() => fail(E(408, 'UploadTimeout', 'request took too long to send data'), true),
                    this.opts.dataTimeout);
            };
            const fail = (err, destroy) => {
                if (settled) return;
                settled = true;
                if (timer) clearTimeout(timer);
                out.destroy();
                fs.rm(tmp, { force: true }, () => {});
                discarding = true;
                reject(err);
                if (destroy) setImmediate(() => req.destroy());
            };
            req.on('data', (chunk) => {
                ctx.bytesIn += chunk.length;
                if (discarding) return;
                arm();
                size += chunk.length;
                if (maxBytes !== undefined && size > maxBytes) {
                    fail(errors.maxSize(maxBytes));
                    return;
                }
                hash.update(chunk);
                if (!out.write(chunk)) {
                    req.pause();
                    out.once('drain', () => req.resume());
                }
            });
            req.on('end', () => {
                if (settled) return;
                if (timer) clearTimeout(timer);
                out.end(() => {
                    if (settled) return;
                    settled = true;
                    resolve({ tmp: tmp, size: size, md5: hash.digest('base64') });
                });
            });
            const abandoned = () => {
                if (!req.complete) fail(E(499, 'UploadAbandoned', 'request was aborted prematurely by the client'));
            };
            req.on('aborted', abandoned);
            req.on('error', abandoned);
            req.on('close', abandoned);
            out.on('error', (e) => fail(errors.internal()));
            arm();
            if (ctx.expectContinue) res.writeContinue();
            req.resume();
        });
    }

    readJSONBody(ctx, limit) {
        const req = ctx.req;
        return new Promise((resolve, reject) => {
            const chunks = [];
            let size = 0, over = false;
            if (ctx.expectContinue) ctx.res.writeContinue();
            req.on('data', (c) => {
                ctx.bytesIn += c.length;
                size += c.length;
                if (size > limit) over = true;
                else chunks.push(c);
            });
            req.on('end', () => {
                if (over) return reject(E(413, 'RequestEntityTooLarge', 'Request body size exceeds ' + limit));
                const text = Buffer.concat(chunks).toString('utf8');
                if (text.length === 0) return resolve({});
                try {
                    resolve(JSON.parse(text));
                } catch (e) {
                    reject(E(400, 'InvalidContent', 'Invalid JSON: ' + e.message));
                }
            });
            req.on('error', () => reject(E(499, 'UploadAbandoned', 'request was aborted prematurely by the client')));
        });
    }

    // ---------------------------------------------------------- multipart upload (lib/uploads)

    newUploadId() {
        return crypto.randomUUID().slice(0, -1) + this.opts.mpuPrefixLen.toString(16);
    }

    uploadPathFor(login, id, legacy) {
        const len = legacy ? 1 : parseInt(id.charAt(id.length - 1), 16);
        return '/' + login + '/uploads/' + id.substring(0, len) + '/' + id;
    }

    forbidSubuser(ctx) {
        if (ctx.caller.user) throw errors.authorization(ctx.caller.user.login, ctx.url);
    }

    callerLogin(ctx) {
        const c = ctx.caller;
        if (!c.account) return 'anonymous';
        return c.user ? c.account.login + '/' + c.user.login : c.account.login;
    }

    // Authorize against the owner of the uploads tree (the path's account).
    authorizeUpload(ctx, p) {
        const c = ctx.caller;
        if (!c.account) throw errors.authorization('anonymous', p);
        if (c.account.isOperator) return;
        if (c.account.login !== ctx.owner.login) throw errors.authorization(this.callerLogin(ctx), p);
    }

    // uploads/common.js loadUploadFromUrl + uploadContext + authorize
    loadUpload(ctx) {
        this.forbidSubuser(ctx);
        const segs = ctx.path.split('/');
        const id = segs[4];
        if (!ID_REGEX.test(id)) throw errors.resourceNotFound('upload ID ' + id);
        if (id.indexOf(segs[3]) !== 0) throw errors.internal();  // muskie asserts this
        const uploadPath = '/' + segs[1] + '/uploads/' + segs[3] + '/' + id;
        const key = normalizeKey(uploadPath);
        if (key === null) throw errors.invalidPath(uploadPath);
        const md = this.store.entries.get(key);
        if (!md || !md.upload) throw errors.doesNotExist(ctx.path);
        this.authorizeUpload(ctx, ctx.path);
        return { id: id, key: key, md: md, u: md.upload, uploadPath: uploadPath };
    }

    persistUpload(up, state, type, partsMD5) {
        const md = JSON.parse(JSON.stringify(up.md));
        md.upload.state = state;
        md.upload.type = type;
        if (partsMD5 !== undefined) md.upload.partsMD5 = partsMD5;
        this.store.put(up.key, md);
        up.md = md;
        up.u = md.upload;
    }

    async mpuCreate(ctx) {
        ctx.operation = 'CreateUpload';
        this.forbidSubuser(ctx);
        this.authorizeUpload(ctx, ctx.path);
        const body = await this.readJSONBody(ctx, 100000);
        const id = this.newUploadId();
        const uploadPath = this.uploadPathFor(ctx.owner.login, id);
        const err = validateCreateBody(body);
        if (err) throw errors.mpuCreate(err);
        const objectPathKey = normalizeKey(body.objectPath);
        if (objectPathKey === null) throw errors.internal();
        const inputHeaders = body.headers || {};
        const headers = {};
        Object.keys(inputHeaders).forEach((k) => { headers[k.toLowerCase()] = inputHeaders[k]; });
        const size = Object.prototype.hasOwnProperty.call(headers, 'content-length') ?
            headers['content-length'] : this.opts.maxStreamingSize;
        let copies;
        if (Object.prototype.hasOwnProperty.call(headers, 'durability-level')) copies = headers['durability-level'];
        else if (Object.prototype.hasOwnProperty.call(headers, 'x-durability-level')) copies = headers['x-durability-level'];
        else copies = DEF_NUM_COPIES;
        if (typeof copies !== 'number' || copies < DEF_MIN_COPIES || copies > DEF_MAX_COPIES) throw errors.durability();

        // ensurePrefixDir
        const prefixKey = dirnameOf(uploadPath);
        if (!this.store.entries.has(prefixKey)) {
            this.store.put(prefixKey, {
                type: 'directory', key: prefixKey, dirname: dirnameOf(prefixKey),
                mtime: Date.now(), owner: ctx.owner.login, headers: {}
            });
        }
        const now = Date.now();
        this.store.put(uploadPath, {
            type: 'directory',
            key: uploadPath,
            dirname: prefixKey,
            mtime: now,
            owner: ctx.owner.login,
            headers: {},
            upload: {
                id: id,
                state: 'created',
                type: null,
                objectPath: body.objectPath,
                objectPathKey: objectPathKey,
                uploadPath: uploadPath,
                headers: headers,
                sharks: size === 0 ? 0 : copies,
                partsMD5: null,
                objectId: crypto.randomUUID(),
                creationTimeMs: now
            }
        });
        this.sendJSON(ctx, 201, { id: id, partsDirectory: uploadPath });
    }

    async mpuRedirect(ctx, route) {
        ctx.operation = 'RedirectUpload';
        this.forbidSubuser(ctx);
        const pn = route.partNum;
        if (pn !== undefined && !PART_NUM_REGEX.test(pn)) throw errors.resourceNotFound('part num ' + pn);
        const id = route.id;
        const login = ctx.owner.login;
        const tryPath = (legacy) => {
            if (!legacy && parseInt(id.charAt(id.length - 1), 16) > MAX_PREFIX_LEN) return null;
            if (!legacy && parseInt(id.charAt(id.length - 1), 16) < MIN_PREFIX_LEN) return null;
            const p = this.uploadPathFor(login, id, legacy);
            const md = this.store.entries.get(p);
            return md && md.upload ? p : null;
        };
        const found = tryPath(false) || tryPath(true);
        if (!found) throw errors.resourceNotFound(ctx.path);
        if (ctx.req.method === 'PUT' || ctx.req.method === 'POST') ctx.req.resume();
        this.sendEmpty(ctx, 301, { Location: found + (pn !== undefined ? '/' + pn : '') });
    }

    async mpuState(ctx) {
        ctx.operation = 'GetUpload';
        const up = this.loadUpload(ctx);
        const u = up.u;
        const out = {
            id: up.id,
            state: u.state,
            partsDirectory: u.uploadPath,
            targetObject: u.objectPath,
            headers: u.headers,
            numCopies: u.sharks,
            creationTimeMs: u.creationTimeMs
        };
        if (u.state === 'finalizing') {
            const fr = this.store.finalizing.get(up.id + ':' + u.objectPathKey);
            if (fr) {
                out.state = 'done';
                delete out.partsDirectory;
                if (fr.finalizingType === 'commit') {
                    out.partsMD5Summary = u.partsMD5;
                    out.result = 'committed';
                } else {
                    out.result = 'aborted';
                }
            } else {
                out.type = u.type;
            }
        }
        this.sendJSON(ctx, 200, out);
    }

    async mpuAbort(ctx) {
        ctx.operation = 'AbortUpload';
        const up = this.loadUpload(ctx);
        const u = up.u;
        if (u.state === 'created') {
            this.persistUpload(up, 'finalizing', 'abort', null);
        } else if (u.state === 'finalizing' && u.type === 'commit') {
            throw errors.mpuState(up.id, 'already committed');
        }
        const fkey = up.id + ':' + u.objectPathKey;
        const fr = this.store.finalizing.get(fkey);
        if (fr) {
            if (fr.finalizingType !== 'abort') throw errors.mpuArg(up.id, 'already aborted');
        } else {
            this.store.putFinalizing(fkey, {
                uploadId: up.id, finalizingType: 'abort', owner: ctx.owner.login,
                objectPath: u.objectPath, objectId: u.objectId, md5: null
            });
        }
        ctx.req.resume();
        this.writeHead(ctx, 204, { 'Content-Length': '0' });
        ctx.res.end();
    }

    async mpuPart(ctx) {
        ctx.operation = 'UploadPart';
        // Registered after muskie's use(getMetadata, storageContext, authorize).
        this.loadMetadata(ctx, ctx.path);
        this.authorize(ctx, 'putobject', ctx.reqPath);
        const segs = ctx.path.split('/');
        const partNum = segs[5];
        if (!PART_NUM_REGEX.test(partNum)) throw errors.mpuArg(ctx.url, partNum + ' is not a valid part number');
        const up = this.loadUpload(ctx);
        if (up.u.state !== 'created') throw errors.mpuState(up.id, 'already finalized');
        const h = ctx.req.headers;
        if (Object.prototype.hasOwnProperty.call(h, 'durability-level') ||
            Object.prototype.hasOwnProperty.call(h, 'x-durability-level')) {
            throw errors.mpuArg(up.id, 'cannot change durability level for multipart uploads');
        }
        const declared = Object.prototype.hasOwnProperty.call(up.u.headers, 'content-length') ?
            up.u.headers['content-length'] : this.opts.maxStreamingSize;
        const args = this.parseObjectArguments(ctx);
        args.copies = up.u.sharks;
        if (declared === 0) args.zero = true;
        await this.storeObject(ctx, ctx.key, args, this.savedHeaders(ctx.req.headers));
    }

    async mpuCommit(ctx) {
        ctx.operation = 'CommitUpload';
        const req = ctx.req;
        const up = this.loadUpload(ctx);
        const u = up.u;

        // loadOwner (of the target object) + getMetadata + storageContext + authorize
        let tOwnerLogin;
        try {
            tOwnerLogin = decodeURIComponent(u.objectPath.split('/', 2).pop());
        } catch (e) {
            throw errors.invalidPath(u.objectPath);
        }
        const tOwner = this.accounts.get(tOwnerLogin);
        if (!tOwner) throw errors.accountDoesNotExist(tOwnerLogin);
        const tKey = u.objectPathKey;
        const tRoot = isRootDirectory(tKey);
        const tParentKey = tRoot ? null : dirnameOf(tKey);
        const tmd = this.store.get(tKey);
        const tpmd = tRoot ? undefined : (this.store.get(tParentKey) || null);
        const tPath = u.objectPath;
        if (!tmd && tpmd === undefined) throw errors.resourceNotFound(tPath);
        if (!tmd && !(tpmd && tpmd.type)) throw errors.dirDoesNotExist(tPath);
        {
            const saved = ctx.owner;
            ctx.owner = tOwner;
            try {
                this.authorize(ctx, 'putobject', tPath);
            } finally {
                ctx.owner = saved;
            }
        }
        if (tmd && tmd.type === 'directory') throw errors.dirOperation(tPath, req.method);
        if (!(tRoot || isRootDirectory(tParentKey))) {
            if (!tpmd || !tpmd.type) throw errors.dirDoesNotExist(tPath);
            if (tpmd.type !== 'directory') throw errors.parentNotDir(tPath);
        }
        if (tRoot) throw errors.rootDir(req.method, tPath);

        const body = await this.readJSONBody(ctx, 500000);
        const verr = validateCommitBody(body);
        if (verr) throw errors.mpuArg(up.id, verr);
        const parts = body.parts;
        const partsMD5 = crypto.createHash('md5');
        parts.forEach((p) => partsMD5.update(p));
        const computedPartsMD5 = partsMD5.digest('base64');

        // validateUploadState
        if (u.state === 'finalizing') {
            if (u.type === 'abort') throw errors.mpuState(up.id, 'already aborted');
            if (computedPartsMD5 !== u.partsMD5) throw errors.mpuState(up.id, 'already has a commit in progress');
        }

        // validateParts
        let sum = 0;
        const partMds = [];
        for (let i = 0; i < parts.length; i++) {
            const pmd = this.store.entries.get(up.key + '/' + i);
            if (!pmd) throw errors.mpuArg(up.id, '[part ' + i + '] part does not exist');
            const size = parseInt(pmd.contentLength, 10);
            if (pmd.etag !== parts[i]) throw errors.mpuArg(up.id, '[part ' + i + '] invalid etag "' + parts[i] + '"');
            if (i !== parts.length - 1 && size < this.opts.minPartSize) {
                throw errors.mpuArg(up.id, '[part ' + i + '] part is too small (size ' + size + ')');
            }
            sum += size;
            partMds.push(pmd);
        }
        if (u.headers['content-length']) {
            const want = parseInt(u.headers['content-length'], 10);
            if (want !== sum) throw errors.mpuArg(up.id, 'expected content-length ' + want + ', but object was ' + sum);
        }

        // finalizingState
        this.persistUpload(up, 'finalizing', 'commit', computedPartsMD5);

        // finalizeUpload ("mako-finalize": concatenate the parts)
        let md5, tmp = null;
        if (sum === 0) {
            if (Object.prototype.hasOwnProperty.call(u.headers, 'content-md5') && u.headers['content-md5'] !== ZERO_BYTE_MD5) {
                throw errors.mpuArg(up.id, 'expected content-md5 "' + ZERO_BYTE_MD5 + '", but object has md5 "' +
                    u.headers['content-md5'] + '"');
            }
            md5 = ZERO_BYTE_MD5;
        } else {
            const fkey0 = up.id + ':' + tKey;
            const existing = this.store.finalizing.get(fkey0);
            const cur = this.store.entries.get(tKey);
            if (existing && existing.finalizingType === 'commit' && cur && cur.objectId === u.objectId) {
                md5 = cur.contentMD5;  // a repeated commit: the object is already assembled
            } else {
                const got = await this.concatParts(partMds);
                tmp = got.tmp;
                md5 = got.md5;
            }
            if (u.headers['content-md5'] && u.headers['content-md5'] !== md5) {
                if (tmp) fs.rm(tmp, { force: true }, () => {});
                throw errors.mpuArg(up.id, 'expected content-md5 "' + u.headers['content-md5'] +
                    '", but object has md5 "' + md5 + '"');
            }
        }

        // commitUpload
        const fkey = up.id + ':' + tKey;
        const fr = this.store.finalizing.get(fkey);
        if (fr) {
            if (tmp) fs.rm(tmp, { force: true }, () => {});
            if (fr.finalizingType === 'abort') throw errors.mpuState(up.id, 'already aborted');
            if (u.partsMD5 !== computedPartsMD5) throw errors.mpuState(up.id, 'already committed with a different part set');
        } else {
            if (tmp) this.store.adoptData(tmp, u.objectId);
            const h = u.headers;
            this.store.put(tKey, {
                type: 'object',
                key: tKey,
                dirname: dirnameOf(tKey),
                mtime: Date.now(),
                owner: tOwner.login,
                headers: this.savedHeaders(h),
                contentLength: sum,
                contentMD5: md5,
                contentType: h['content-type'] || 'application/octet-stream',
                contentDisposition: h['content-disposition'],
                objectId: u.objectId,
                etag: u.objectId,
                sharks: sum === 0 ? 0 : u.sharks
            });
            this.store.putFinalizing(fkey, {
                uploadId: up.id, finalizingType: 'commit', owner: ctx.owner.login,
                objectPath: u.objectPath, objectId: u.objectId, md5: md5
            });
        }
        this.sendEmpty(ctx, 201, { Location: u.objectPath, 'Computed-MD5': md5 });
    }

    concatParts(partMds) {
        const tmp = this.store.tmpFile();
        const out = fs.createWriteStream(tmp);
        const hash = crypto.createHash('md5');
        return new Promise((resolve, reject) => {
            let i = 0;
            const next = () => {
                if (i >= partMds.length) {
                    out.end(() => resolve({ tmp: tmp, md5: hash.digest('base64') }));
                    return;
                }
                const pmd = partMds[i++];
                if (!pmd.contentLength) return next();
                const rs = fs.createReadStream(this.store.dataPath(pmd.objectId));
                rs.on('data', (c) => {
                    hash.update(c);
                    if (!out.write(c)) {
                        rs.pause();
                        out.once('drain', () => rs.resume());
                    }
                });
                rs.on('end', next);
                rs.on('error', (e) => {
                    out.destroy();
                    fs.rm(tmp, { force: true }, () => {});
                    reject(errors.internal());
                });
            };
            next();
        });
    }

    async mpuOperatorOnly(ctx, route) {
        ctx.operation = 'UploadsOperatorOnly';
        this.loadMetadata(ctx, ctx.path);
        this.authorize(ctx, route.op === 'DELETE' ? 'delete' + (ctx.md ? ctx.md.type : 'object') : 'putobject', ctx.reqPath);
        if (route.op === 'DELETE' && ctx.caller.account && ctx.caller.account.isOperator) {
            if (ctx.query.allowMpuDeletes !== 'true') return this.sendEmpty(ctx, 422);
            if (ctx.md.type === 'directory') return this.deleteDirectory(ctx);
            return this.deleteObject(ctx);
        }
        ctx.req.resume();
        this.sendEmpty(ctx, 405);
    }
}

// ------------------------------------------------------------------ main

function main() {
    const { opts, cfg } = loadOptions();
    const sim = new Simulator(opts, cfg);
    const handler = (req, res) => sim.handle(req, res, false);
    let server;
    if (opts.tlsCert && opts.tlsKey) {
        server = https.createServer({ cert: fs.readFileSync(opts.tlsCert), key: fs.readFileSync(opts.tlsKey) }, handler);
    } else {
        server = http.createServer(handler);
    }
    // Like muskie (restify noWriteContinue): answer "Expect: 100-continue"
    // only once the request passed authentication and the checks before the
    // body is read.
    server.on('checkContinue', (req, res) => sim.handle(req, res, true));
    server.keepAliveTimeout = 120000;
    server.headersTimeout = 125000;
    server.requestTimeout = 0;
    server.listen(opts.port, opts.host, () => {
        const port = server.address().port;
        if (opts.portFile) fs.writeFileSync(opts.portFile, String(port) + '\n');
        process.stdout.write('manta-sim listening on ' + (opts.tlsCert ? 'https' : 'http') + '://' +
            opts.host + ':' + port + ' (root ' + path.resolve(opts.root) + ', skew ' + opts.skew + 's)\n');
    });
    const stop = () => {
        server.close();
        if (sim.logStream) sim.logStream.end();
        setTimeout(() => process.exit(0), 200).unref();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

if (require.main === module) main();

module.exports = { nginxRange: nginxRange, rfc3986: rfc3986, Simulator: Simulator };
