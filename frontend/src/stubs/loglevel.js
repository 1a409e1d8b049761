// loglevel's API (1.9: named loggers, levels, persisted levels, method factories) for the
// viewer's build, in place of the package. Cornerstone3D makes a logger per module as its code
// is evaluated (about eighty), and loglevel looks each new logger's persisted level up in
// localStorage and then in document.cookie: about 160 storage reads in the entry's run, the
// largest share of its JavaScript that a trace of a cold load attributes to one package
// (docs/viewer.md). Here the persisted levels are read once, at the first logger; a level
// persisted by setLevel is written as loglevel writes it (localStorage `loglevel:<name>`, else
// a cookie), so that `localStorage.setItem('loglevel:cs3d.core', 'DEBUG')` and a reload still
// turn a logger's messages on.
const LEVELS = { TRACE: 0, DEBUG: 1, INFO: 2, WARN: 3, ERROR: 4, SILENT: 5 };
const METHODS = ['trace', 'debug', 'info', 'warn', 'error'];
const noop = () => {};
const loggers = {};
let persisted = null;
let root = null;

function storageKey(name) {
  return typeof name === 'string' && name ? `loglevel:${name}` : 'loglevel';
}

// Every persisted level, from one pass over localStorage and one read of the cookies.
function readPersisted() {
  persisted = new Map();
  if (typeof window === 'undefined') return;
  try {
    for (const part of window.document.cookie.split(';')) {
      const at = part.indexOf('=');
      const key = decodeURIComponent(part.slice(0, at).trim());
      if (key.startsWith('loglevel')) persisted.set(key, part.slice(at + 1).trim());
    }
  } catch {
    // No cookies here (a sandboxed frame): nothing persisted in them.
  }
  try {
    const storage = window.localStorage;
    for (let i = 0; i < storage.length; i++) {
      const key = storage.key(i);
      if (key?.startsWith('loglevel')) persisted.set(key, storage.getItem(key));
    }
  } catch {
    // No localStorage (privacy settings): the cookies only.
  }
}

function normalize(input) {
  let level = input;
  if (typeof level === 'string' && LEVELS[level.toUpperCase()] !== undefined) level = LEVELS[level.toUpperCase()];
  if (typeof level === 'number' && level >= 0 && level <= LEVELS.SILENT) return level;
  throw new TypeError(`log.setLevel() called with invalid level: ${input}`);
}

function consoleMethod(name) {
  const method = name === 'debug' ? 'log' : name;
  if (typeof console === 'undefined') return noop;
  return (console[method] || console.log || noop).bind(console);
}

class Logger {
  constructor(name, factory) {
    this.name = name;
    this.levels = LEVELS;
    this.methodFactory = factory || consoleMethod;
    this.userLevel = null;
    this.defaultLevel = null;
    this.inheritedLevel = normalize(root ? root.getLevel() : 'WARN');
    if (persisted === null) readPersisted();
    const stored = persisted.get(storageKey(name));
    if (stored !== undefined && LEVELS[stored] !== undefined) this.userLevel = LEVELS[stored];
    this.replaceMethods();
  }

  replaceMethods() {
    const level = this.getLevel();
    METHODS.forEach((method, i) => {
      this[method] = i < level ? noop : this.methodFactory(method, level, this.name);
    });
    this.log = this.debug;
  }

  getLevel() {
    return this.userLevel ?? this.defaultLevel ?? this.inheritedLevel;
  }

  setLevel(level, persist) {
    this.userLevel = normalize(level);
    if (persist !== false) this.persist(this.userLevel);
    this.replaceMethods();
  }

  persist(level) {
    const name = Object.keys(LEVELS).find((key) => LEVELS[key] === level);
    const key = storageKey(this.name);
    persisted?.set(key, name);
    try {
      window.localStorage[key] = name;
      return;
    } catch {
      // Fall back to a cookie, as loglevel does.
    }
    try {
      window.document.cookie = `${encodeURIComponent(key)}=${name};`;
    } catch {
      // Nowhere to keep it.
    }
  }

  setDefaultLevel(level) {
    this.defaultLevel = normalize(level);
    if (persisted?.get(storageKey(this.name)) === undefined) this.setLevel(level, false);
  }

  resetLevel() {
    this.userLevel = null;
    const key = storageKey(this.name);
    persisted?.delete(key);
    try {
      window.localStorage.removeItem(key);
    } catch {
      // Not stored there.
    }
    try {
      window.document.cookie = `${encodeURIComponent(key)}=; expires=Thu, 01 Jan 1970 00:00:00 UTC`;
    } catch {
      // Nor there.
    }
    this.replaceMethods();
  }

  enableAll(persist) {
    this.setLevel(LEVELS.TRACE, persist);
  }

  disableAll(persist) {
    this.setLevel(LEVELS.SILENT, persist);
  }

  rebuild() {
    if (this !== root) this.inheritedLevel = normalize(root.getLevel());
    this.replaceMethods();
    if (this === root) for (const name of Object.keys(loggers)) loggers[name].rebuild();
  }
}

root = new Logger();
root.getLogger = (name) => {
  if ((typeof name !== 'symbol' && typeof name !== 'string') || name === '') {
    throw new TypeError('You must supply a name when creating a logger.');
  }
  loggers[name] ||= new Logger(name, root.methodFactory);
  return loggers[name];
};
root.noConflict = () => root;
root.getLoggers = () => loggers;
root.default = root;

export default root;
