// The notes page: a small script over this server's JSON API (same origin, bearer token).
// Everything the API says goes into the page as text (textContent), never as HTML.

const SESSION_KEY = 'notes.session';
const ORDER_KEY = 'notes.order';
const PAGE_SIZE = 20;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super((problem && (problem.detail || problem.title)) || `The server answered ${status}.`);
    this.status = status;
    this.problem = problem || {};
    this.retryAfter = retryAfter;
  }
}

let session = readSession();

function readSession() {
  try {
    const saved = JSON.parse(localStorage.getItem(SESSION_KEY));
    if (saved && saved.token && Date.parse(saved.expires_at) > Date.now()) return saved;
  } catch {
    // Nothing usable stored: signed out.
  }
  localStorage.removeItem(SESSION_KEY);
  return null;
}

function saveSession(value) {
  session = value;
  if (value) localStorage.setItem(SESSION_KEY, JSON.stringify(value));
  else localStorage.removeItem(SESSION_KEY);
}

/** One call to the API: the parsed JSON body (null for 204), or an ApiError. */
async function api(method, path, body) {
  return (await call(method, path, body)).data;
}

/**
 * One call to the API: `data`, the parsed JSON body (null for 204), and `next`, the URL its
 * `Link: rel="next"` header gives (null without one); or an ApiError.
 */
async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (session) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, {
      detail: 'The server could not be reached. Check the connection and try again.',
    });
  }
  if (response.status === 204) return { data: null, next: null };
  const data = await response.json().catch(() => null);
  if (response.ok) return { data, next: nextLink(response.headers.get('Link')) };
  const error = new ApiError(response.status, data, response.headers.get('Retry-After'));
  if (response.status === 401 && session && path !== '/sessions') {
    // The token expired or was revoked (signed out elsewhere, password changed).
    saveSession(null);
    show('Your session has ended. Please sign in again.');
  }
  throw error;
}

/** The target of `rel="next"` in a Link header, as given: its query is the API's to read. */
function nextLink(header) {
  const found = /<([^>]*)>[^<]*?;\s*rel="?next\b/i.exec(header || '');
  return found ? found[1] : null;
}

// ------------------------------------------------------------------ messages

function announce(text, region = $('status')) {
  region.textContent = '';
  // A new text node each time, so screen readers repeat the same message.
  window.setTimeout(() => { region.textContent = text; }, 50);
}

/** A message for people from an API error, for the end of a form. */
function describe(error) {
  if (error.status === 429 || error.status === 503) {
    const wait = Number(error.retryAfter);
    const later = wait > 0 ? ` Try again in ${wait} second${wait === 1 ? '' : 's'}.` : ' Try again shortly.';
    return (error.status === 429 ? 'Too many attempts.' : 'The server is busy.') + later;
  }
  return error.message;
}

function clearErrors(form) {
  for (const field of form.querySelectorAll('[aria-invalid]')) {
    field.removeAttribute('aria-invalid');
    const own = $(`${field.id}-error`);
    if (own) own.remove();
    const described = (field.getAttribute('aria-describedby') || '')
      .split(' ').filter((id) => id && id !== `${field.id}-error`);
    if (described.length) field.setAttribute('aria-describedby', described.join(' '));
    else field.removeAttribute('aria-describedby');
  }
  const formError = form.querySelector('.form-error');
  if (formError) {
    formError.hidden = true;
    formError.textContent = '';
  }
}

function fieldError(field, message) {
  field.setAttribute('aria-invalid', 'true');
  let note = $(`${field.id}-error`);
  if (!note) {
    note = document.createElement('p');
    note.id = `${field.id}-error`;
    note.className = 'field-error';
    field.insertAdjacentElement('afterend', note);
    const described = field.getAttribute('aria-describedby');
    field.setAttribute('aria-describedby', described ? `${described} ${note.id}` : note.id);
  }
  note.textContent = message;
}

/**
 * Show `error` next to the field it concerns: the problem's `errors` name fields by their
 * JSON names, which are the inputs' names; a conflict on sign-up is the e-mail's. What
 * concerns no field goes at the end of the form. The first bad field gets the focus.
 */
function showErrors(form, error, conflictField) {
  clearErrors(form);
  const marked = [];
  const listed = Array.isArray(error.problem.errors) ? error.problem.errors : [];
  for (const { field, message } of listed) {
    const input = form.elements.namedItem(field);
    if (input && input.id) {
      fieldError(input, message);
      marked.push(input);
    }
  }
  if (!marked.length && error.status === 409 && conflictField) {
    const input = form.elements.namedItem(conflictField);
    fieldError(input, error.message);
    marked.push(input);
  }
  if (marked.length) {
    marked[0].focus();
    return;
  }
  const formError = form.querySelector('.form-error');
  formError.textContent = describe(error);
  formError.hidden = false;
}

function busy(form, isBusy) {
  for (const button of form.querySelectorAll('button')) button.disabled = isBusy;
}

// ------------------------------------------------------------------ views

function show(message) {
  const signedIn = Boolean(session);
  $('signed-out').hidden = signedIn;
  $('signed-in').hidden = !signedIn;
  $('account').hidden = !signedIn;
  if (signedIn) {
    $('signed-in-as').textContent = `Signed in as ${session.user.email}`;
    showVerification();
    loadPage();
    live.start();
  } else {
    live.stop();
    $('notes').replaceChildren();
    forgetSearch();
  }
  if (message) announce(message);
}

async function signIn(email, password) {
  const answer = await api('POST', '/sessions', { email, password });
  saveSession({ token: answer.token, expires_at: answer.expires_at, user: answer.user });
  listing.cursors = [];
  listing.after = null;
}

$('sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  busy(form, true);
  try {
    await signIn(form.elements.email.value, form.elements.password.value);
    form.reset();
    show('Signed in.');
    $('new-note').focus();
  } catch (error) {
    showErrors(form, error);
  } finally {
    busy(form, false);
  }
});

$('sign-up').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  busy(form, true);
  const email = form.elements.email.value;
  const password = form.elements.password.value;
  const name = form.elements.name.value.trim();
  try {
    await api('POST', '/users', name ? { email, password, name } : { email, password });
    await signIn(email, password);
    form.reset();
    show('Account created. You are signed in.');
    $('new-note').focus();
  } catch (error) {
    showErrors(form, error, 'email');
  } finally {
    busy(form, false);
  }
});

$('sign-out').addEventListener('click', async () => {
  try {
    await api('DELETE', '/sessions/current');
  } catch {
    // Signed out here either way; the token expires by itself.
  }
  saveSession(null);
  show('Signed out.');
  $('sign-in-email').focus();
});

// ------------------------------------------------------------------ notes

const listing = {
  order: localStorage.getItem(ORDER_KEY) === 'desc' ? 'desc' : 'asc',
  completed: '',
  query: '', // the search shown ('' for the plain list)
  // Cursors: for the list, the last id of the page before; for a search, the URL the page
  // before linked to (`Link: rel="next"`, opaque). Both kinds page the same way from here.
  after: null, // the cursor of the page shown (null: the first page)
  cursors: [], // the cursors of the pages before it, for "Previous"
  next: null, // the cursor of the next page (null: there is none)
  listAt: null, // while searching: the list's { after, cursors }, to go back to
};

// Answers can overtake each other (a slow search, then Escape): only the latest one is shown.
let latestLoad = 0;
// Loads on their way (a page, a search): a live reload waits for them (see `live.reloadNow`).
let loading = 0;

/** The page `state` points at: `notes`, and `next`, the cursor of the page after (or null). */
function fetchPage(state) {
  return state.query ? fetchResults(state) : fetchNotes(state);
}

async function fetchNotes(state) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE + 1), order: state.order });
  if (state.completed) query.set('completed', state.completed);
  if (state.after !== null) query.set('after', String(state.after));
  const notes = await api('GET', `/notes?${query}`);
  // One note more than a page says whether there is a next page.
  const next = notes.length > PAGE_SIZE ? notes[PAGE_SIZE - 1].id : null;
  return { notes: notes.slice(0, PAGE_SIZE), next };
}

async function fetchResults(state) {
  let path = state.after;
  if (path === null) {
    const query = new URLSearchParams({ q: state.query, limit: String(PAGE_SIZE) });
    if (state.completed) query.set('completed', state.completed);
    path = `/notes?${query}`;
  }
  const { data, next } = await call('GET', path);
  return { notes: data, next };
}

/**
 * Fetch and show the page `listing` points at; `isLast` when the page after it is known empty.
 * A live reload (`live`) gives way to a note opened here while it was on its way: showing the
 * page would close it, so the reload is tried again later (see `live.reloadNow`).
 */
async function loadPage(isLast = false, { live: isLive = false } = {}) {
  const ticket = ++latestLoad;
  live.cancelReload(); // this load reads the page afresh
  loading += 1;
  let page;
  try {
    page = await fetchPage(listing);
  } catch (failure) {
    if (!session || ticket !== latestLoad) return;
    const error = $('list-error');
    error.textContent = describe(failure);
    error.hidden = false;
    return;
  } finally {
    loading -= 1;
  }
  if (ticket !== latestLoad) return;
  if (isLive && openHere()) live.reloadSoon();
  else await showPage(page, isLast);
}

/** Whether a note on the page is open to edit or to confirm a delete (a redraw would close it). */
function openHere() {
  return $('notes').querySelector(':scope > li:not(:has(.note-text[id]))') !== null;
}

async function showPage({ notes, next }, isLast = false) {
  $('list-error').hidden = true;
  if (!notes.length && listing.cursors.length) {
    // Nothing here: the last note of this page went, or a search's page before was exactly
    // full (a full page always links on). Show the page before, as the last one.
    listing.after = listing.cursors.pop();
    return loadPage(true);
  }
  listing.next = isLast ? null : next;
  shown.clear();
  $('notes').replaceChildren(...notes.map(noteItem));
  $('empty').hidden = notes.length > 0 || Boolean(listing.query);
  // Results come best first whatever the order.
  $('order').disabled = Boolean(listing.query);
  $('previous').disabled = listing.cursors.length === 0;
  $('next').disabled = listing.next === null;
  $('page-number').textContent = `Page ${listing.cursors.length + 1}`;
  announce(listing.query ? resultSummary(notes.length) : '', $('search-summary'));
}

/** What a search found, for the live region next to the results. */
function resultSummary(count) {
  const query = `“${listing.query}”`;
  if (!count) return `No notes match ${query}.`;
  const notes = count === 1 ? '1 note' : `${count} notes`;
  const page = listing.cursors.length + 1;
  if (page === 1 && listing.next === null) return `${notes} match${count === 1 ? 'es' : ''} ${query}, best first.`;
  const more = listing.next === null ? '' : ', more on the next page';
  return `Page ${page}: ${notes} matching ${query}, best first${more}.`;
}

function firstPage() {
  listing.after = null;
  listing.cursors = [];
  return loadPage();
}

function element(tag, properties = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, properties);
  node.append(...children);
  return node;
}

function button(text, onClick, className = 'secondary') {
  const node = element('button', { type: 'button', className, textContent: text });
  node.addEventListener('click', onClick);
  return node;
}

// The notes shown, by id: a change from another tab or device updates them in place.
const shown = new Map();

function noteItem(note) {
  const item = element('li', { className: note.completed ? 'note done' : 'note' });
  item.dataset.id = String(note.id);
  shown.set(note.id, { item, note });
  renderNote(item, note);
  return item;
}

function renderNote(item, note) {
  const id = `note-${note.id}`;
  item.className = note.completed ? 'note done' : 'note';
  const text = element('p', { className: 'note-text', id: `${id}-text` }, noteText(note));
  const done = element('input', { type: 'checkbox', id: `${id}-done`, checked: note.completed });
  done.setAttribute('aria-describedby', text.id);
  done.addEventListener('change', () => setDone(item, note, done));
  const created = new Date(note.created_at);
  const meta = element('div', { className: 'note-meta' }, [
    element('label', { htmlFor: done.id }, [done, 'Done']),
    element('time', { dateTime: note.created_at, textContent: created.toLocaleString() }),
  ]);
  const edit = button('Edit', () => editNote(item, note));
  const remove = button('Delete', () => confirmDelete(item, note));
  edit.setAttribute('aria-describedby', text.id);
  remove.setAttribute('aria-describedby', text.id);
  item.replaceChildren(
    element('div', { className: 'note-body' }, [text, meta]),
    element('div', { className: 'note-actions' }, [edit, remove]),
  );
}

/** The note's text, or for a search result its snippet with the matched words marked. */
function noteText(note) {
  if (typeof note.snippet !== 'string') return [note.text];
  const at = note.text.indexOf(note.snippet);
  // An excerpt says so: "…" where it starts or ends inside the text.
  const before = at > 0 ? ['…'] : [];
  const after = at >= 0 && at + note.snippet.length < note.text.length ? ['…'] : [];
  return [...before, ...marked(note.snippet, note.matches), ...after];
}

/**
 * `snippet` as text nodes, with each [start, end) of `matches` in a <mark>. The API counts
 * characters as Unicode code points, a JavaScript string as UTF-16 units (an emoji is two):
 * Array.from splits by code point, so the offsets index it directly.
 */
function marked(snippet, matches) {
  const chars = Array.from(snippet);
  const ranges = (Array.isArray(matches) ? matches : [])
    .filter(([start, end]) => Number.isInteger(start) && Number.isInteger(end) && start < end)
    .sort((a, b) => a[0] - b[0]);
  const nodes = [];
  let at = 0;
  for (const [start, end] of ranges) {
    if (start < at || end > chars.length) continue; // overlapping or out of range: left plain
    if (start > at) nodes.push(document.createTextNode(chars.slice(at, start).join('')));
    nodes.push(element('mark', { textContent: chars.slice(start, end).join('') }));
    at = end;
  }
  if (at < chars.length) nodes.push(document.createTextNode(chars.slice(at).join('')));
  return nodes;
}

/** Take the API's new version of `note`; a snippet no longer fits a changed text. */
function update(note, changed) {
  if (changed.text !== note.text) {
    delete note.snippet;
    delete note.matches;
  }
  Object.assign(note, changed);
}

async function setDone(item, note, box) {
  box.disabled = true;
  try {
    update(note, await api('PATCH', `/notes/${note.id}`, { completed: box.checked }));
    renderNote(item, note);
    $(`note-${note.id}-done`).focus();
    announce(note.completed ? 'Marked done.' : 'Marked not done.');
  } catch (error) {
    box.checked = note.completed;
    box.disabled = false;
    if (session) itemError(item, describe(error));
  }
}

function itemError(item, message) {
  let note = item.querySelector('.form-error');
  if (!note) {
    note = element('p', { className: 'form-error' });
    note.setAttribute('role', 'alert');
    item.append(note);
  }
  note.textContent = message;
}

function editNote(item, note) {
  const id = `note-${note.id}-edit`;
  const form = element('form', { className: 'note-body', noValidate: true });
  const area = element('textarea', { id, name: 'text', rows: 3, maxLength: 10000, value: note.text });
  const save = element('button', { type: 'submit', textContent: 'Save' });
  const cancel = button('Cancel', () => {
    renderNote(item, note);
    item.querySelector('.note-actions button').focus();
  });
  form.append(
    element('div', { className: 'field' }, [element('label', { htmlFor: id, textContent: 'Note text' }), area]),
    element('div', { className: 'note-actions' }, [save, cancel]),
    element('p', { className: 'form-error', hidden: true }),
  );
  form.querySelector('.form-error').setAttribute('role', 'alert');
  form.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') cancel.click();
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    busy(form, true);
    try {
      update(note, await api('PATCH', `/notes/${note.id}`, { text: area.value }));
      renderNote(item, note);
      item.querySelector('.note-actions button').focus();
      announce('Note saved.');
    } catch (error) {
      busy(form, false);
      if (session) showErrors(form, error);
    }
  });
  item.replaceChildren(form);
  area.focus();
}

function confirmDelete(item, note) {
  const question = element('p', { className: 'confirm', textContent: 'Delete this note?' });
  const keep = button('Keep', () => {
    renderNote(item, note);
    item.querySelector('.note-actions button:last-child').focus();
  });
  const yes = button('Yes, delete', async () => {
    yes.disabled = true;
    keep.disabled = true;
    try {
      await api('DELETE', `/notes/${note.id}`);
      announce('Note deleted.');
      await loadPage();
      $('new-note').focus();
    } catch (error) {
      if (error.status === 404) {
        announce('That note was already deleted.');
        await loadPage();
        return;
      }
      yes.disabled = false;
      keep.disabled = false;
      if (session) itemError(item, describe(error));
    }
  }, 'danger');
  const text = element('p', { className: 'note-text', textContent: note.text });
  item.replaceChildren(
    element('div', { className: 'note-body' }, [text]),
    element('div', { className: 'note-actions' }, [question, yes, keep]),
  );
  keep.focus();
}

$('add-note').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  busy(form, true);
  try {
    await api('POST', '/notes', { text: form.elements.text.value });
    form.reset();
    announce('Note added.');
    // Newest first: the new note heads the first page. Oldest first: it is at the end of the
    // list, on this page if there is room.
    await (listing.order === 'desc' ? firstPage() : loadPage());
  } catch (error) {
    if (session) showErrors(form, error);
  } finally {
    busy(form, false);
    if (session) form.elements.text.focus();
  }
});

$('order').value = listing.order;
$('order').addEventListener('change', (event) => {
  listing.order = event.currentTarget.value === 'desc' ? 'desc' : 'asc';
  localStorage.setItem(ORDER_KEY, listing.order);
  firstPage();
});

$('show').addEventListener('change', (event) => {
  listing.completed = event.currentTarget.value;
  firstPage();
});

$('next').addEventListener('click', async () => {
  if (listing.next === null) return;
  listing.cursors.push(listing.after);
  listing.after = listing.next;
  await loadPage();
  // A search's next page can turn out empty, back on page 1 with both buttons disabled.
  if ($('next').disabled) ($('previous').disabled ? $('search-q') : $('previous')).focus();
});

$('previous').addEventListener('click', async () => {
  if (!listing.cursors.length) return;
  listing.after = listing.cursors.pop();
  await loadPage();
  if ($('previous').disabled) $('next').focus();
});

// ------------------------------------------------------------------ live changes

/**
 * Changes made elsewhere (another tab, a phone) arrive on `GET /notes/events` and are applied in
 * place: an edited or done note is redrawn (unless it is being edited or deleted here), a deleted
 * one leaves, a new one reloads the page it may belong on. `fetch` reads the stream, since an
 * EventSource cannot send the bearer token. After a drop it reconnects with `Last-Event-ID`, so
 * no change is missed; each change is applied once (by its number).
 */
const live = {
  controller: null,
  lastSeq: null, // the number of the last change applied (null: none yet)
  retry: 1000,
  reload: null, // a pending page reload (several new notes at once reload once)

  start() {
    if (this.controller) return;
    this.controller = new AbortController();
    this.follow(this.controller.signal);
  },

  stop() {
    if (this.controller) this.controller.abort();
    this.cancelReload();
    this.controller = null;
    this.lastSeq = null;
  },

  async follow(signal) {
    while (!signal.aborted && session) {
      try {
        await this.read(signal);
        this.retry = 1000;
      } catch {
        // Dropped (network, server restart): try again shortly, a little later each time.
      }
      if (signal.aborted) return;
      await new Promise((resolve) => setTimeout(resolve, this.retry));
      this.retry = Math.min(this.retry * 2, 15000);
    }
  },

  async read(signal) {
    const headers = { Accept: 'text/event-stream', Authorization: `Bearer ${session.token}` };
    if (this.lastSeq !== null) headers['Last-Event-ID'] = String(this.lastSeq);
    const response = await fetch('/notes/events', { headers, signal, cache: 'no-store' });
    if (response.status === 401) {
      saveSession(null);
      show('Your session has ended. Please sign in again.');
      return;
    }
    if (response.status === 410) {
      // Away longer than changes are kept: start from now, with the page as it is now.
      this.lastSeq = null;
      this.reloadNow();
      return;
    }
    if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
    // Connected from now on: the page shown may predate it, so read it once more.
    if (this.lastSeq === null) this.reloadNow();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        this.frame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  },

  frame(text) {
    let data = null;
    let id = null;
    for (const line of text.split('\n')) {
      if (line.startsWith('data: ')) data = line.slice(6);
      else if (line.startsWith('id: ')) id = Number(line.slice(4));
    }
    if (data === null || !Number.isInteger(id)) return; // a comment (keep-alive)
    if (this.lastSeq !== null && id <= this.lastSeq) return; // seen already
    this.lastSeq = id;
    this.apply(JSON.parse(data));
  },

  apply(change) {
    const here = shown.get(change.id);
    const busyHere = here && !here.item.querySelector('.note-text[id]');
    if (change.deleted) {
      if (!here) return;
      shown.delete(change.id);
      if (!busyHere || here.item.querySelector('.confirm')) here.item.remove();
      if (!$('notes').children.length) this.reloadSoon();
      return;
    }
    if (!here) {
      if (!listing.query) this.reloadSoon();
      return;
    }
    if (busyHere) return; // being edited here: this tab's save decides
    update(here.note, change.note);
    renderNote(here.item, here.note);
  },

  /**
   * Read the page shown once more: now, or as soon as no load is on its way (a reload would
   * supersede it: a search would show the list it is leaving, a pager button would not know
   * where it landed) and no note here is open to edit or delete (a reload would close it; one
   * opened while the page is on its way makes the reload give way too, see `loadPage`).
   */
  reloadNow() {
    clearTimeout(this.reload);
    if (!session) return;
    if (loading || openHere()) this.reloadSoon();
    else loadPage(false, { live: true });
  },

  /** A load has begun that reads the page afresh: a reload asked for before it is not needed. */
  cancelReload() {
    clearTimeout(this.reload);
  },

  /** The same a little later: several changes at once reload once. */
  reloadSoon() {
    clearTimeout(this.reload);
    this.reload = setTimeout(() => this.reloadNow(), 150);
  },
};

// ------------------------------------------------------------------ search

$('search').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const query = form.elements.q.value.trim();
  if (!query) {
    endSearch();
    return;
  }
  clearErrors(form);
  busy(form, true);
  const ticket = ++latestLoad;
  live.cancelReload(); // the results are read afresh
  loading += 1;
  try {
    // Switch to the results only once the API takes the query: a refused one leaves the page
    // as it was, with the reason next to the box.
    const page = await fetchPage({ ...listing, query, after: null });
    if (ticket !== latestLoad) return;
    if (!listing.query) listing.listAt = { after: listing.after, cursors: listing.cursors };
    Object.assign(listing, { query, after: null, cursors: [] });
    await showPage(page);
  } catch (error) {
    if (session && ticket === latestLoad) searchError(form, error);
  } finally {
    loading -= 1;
    busy(form, false);
    if (session) form.elements.q.focus();
  }
});

/**
 * A refused query (422) goes next to the box: the API's message about `q`, or its detail when
 * it names no such field. Other failures (busy, offline) go at the end of the form.
 */
function searchError(form, error) {
  if (error.status !== 422) {
    showErrors(form, error);
    return;
  }
  clearErrors(form);
  const listed = Array.isArray(error.problem.errors) ? error.problem.errors : [];
  const own = listed.find(({ field }) => field === 'q');
  fieldError(form.elements.q, own ? own.message : error.message);
}

/** Back to the plain list, on the page it was on before the search. */
function endSearch() {
  latestLoad += 1; // a search still on its way is no longer wanted
  clearErrors($('search'));
  if (!listing.query) return;
  const back = listing.listAt || { after: null, cursors: [] };
  Object.assign(listing, { query: '', listAt: null, after: back.after, cursors: back.cursors });
  announce('Search closed: your notes are listed again.');
  loadPage();
}

/** Signed out: nothing of the search is kept for whoever signs in next. */
function forgetSearch() {
  $('search').reset();
  clearErrors($('search'));
  Object.assign(listing, { query: '', listAt: null });
  $('search-summary').textContent = '';
}

$('search-q').addEventListener('keydown', (event) => {
  const box = event.currentTarget;
  if (event.key !== 'Escape' || (!box.value && !listing.query)) return;
  // Chromium empties a search box on Escape by itself, other browsers do not: do it here, once.
  event.preventDefault();
  box.value = '';
  endSearch();
});

// Emptying the box (its clear button, or deleting the words) goes back to the list as well.
$('search-q').addEventListener('input', (event) => {
  if (!event.currentTarget.value.trim()) endSearch();
});

// ------------------------------------------------------------------ recovery and verification

/** The notice for an address not verified yet. */
function showVerification() {
  const unverified = Boolean(session && session.user.email_verified === false);
  $('unverified').hidden = !unverified;
  if (unverified) {
    $('unverified-text').textContent =
      `Your address ${session.user.email} is not verified yet: open the link we mailed you.`;
  }
}

/** The signed-in user as the server has it now (after a verification, say). */
async function refreshUser() {
  if (!session) return;
  try {
    const user = await api('GET', '/users/me');
    saveSession({ ...session, user });
    showVerification();
  } catch {
    // Shown as it was; a 401 has signed out already.
  }
}

$('resend-verification').addEventListener('click', async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    await api('POST', '/email-verifications');
    announce(`A new link is on its way to ${session.user.email}.`);
  } catch (error) {
    announce(describe(error));
  } finally {
    button.disabled = false;
  }
});

$('forgot').addEventListener('click', (event) => {
  const form = $('forgot-password');
  form.hidden = !form.hidden;
  event.currentTarget.setAttribute('aria-expanded', String(!form.hidden));
  if (!form.hidden) {
    form.elements.email.value = $('sign-in-email').value;
    form.elements.email.focus();
  }
});

$('forgot-password').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  busy(form, true);
  try {
    await api('POST', '/password-resets', { email: form.elements.email.value });
    form.reset();
    form.hidden = true;
    $('forgot').setAttribute('aria-expanded', 'false');
    announce('If an account has that address, a link to set a new password is on its way.');
  } catch (error) {
    showErrors(form, error);
  } finally {
    busy(form, false);
  }
});

// A link from a mail: `#reset-password=TOKEN` or `#verify-email=TOKEN`. The token is read,
// then taken out of the address bar (and of the history), so it is not left on screen.
let resetToken = null;

function openLink() {
  const found = /^#(reset-password|verify-email)=([A-Za-z0-9]+)$/.exec(window.location.hash);
  if (!found) return;
  window.history.replaceState(null, '', window.location.pathname + window.location.search);
  const [, kind, token] = found;
  if (kind === 'reset-password') {
    resetToken = token;
    $('reset-panel').hidden = false;
    $('reset-new-password').focus();
  } else {
    verifyEmail(token);
  }
}

async function verifyEmail(token) {
  try {
    await api('POST', '/email-verifications/confirm', { token });
    announce('Thank you: your e-mail address is verified.');
    await refreshUser();
  } catch (error) {
    announce(error.status === 400
      ? 'This verification link is unknown, already used or expired. Sign in and ask for a new one.'
      : describe(error));
  }
}

$('reset-password').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  busy(form, true);
  try {
    await api('POST', '/password-resets/confirm', {
      token: resetToken,
      password: form.elements.password.value,
    });
    form.reset();
    resetToken = null;
    $('reset-panel').hidden = true;
    saveSession(null);
    show('Your password is changed. Sign in with the new one.');
    $('sign-in-email').focus();
  } catch (error) {
    if (error.status === 400) {
      error.message = 'This link is unknown, already used or expired. Ask for a new one with "Forgot password?".';
    }
    showErrors(form, error);
  } finally {
    busy(form, false);
  }
});

window.addEventListener('hashchange', openLink);

// Another tab signed in or out: follow it.
window.addEventListener('storage', (event) => {
  if (event.key !== SESSION_KEY) return;
  session = readSession();
  show();
});

show();
openLink();
