<?php
// POST /login (form `user`), POST /logout, GET /me -> {"user", "instance"}.

use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;

$answer = function ($user) {
    return new JsonResponse(['user' => $user, 'instance' => config('app.instance')]);
};

// As Laravel's login does: a new session id, then the user in the session.
$router->post('/login', function (Request $request) use ($answer) {
    $user = $request->input('user');
    if (! is_string($user) || $user === '') {
        return new JsonResponse(['error' => 'POST a form field `user`'], 400);
    }
    $request->session()->regenerate();
    $request->session()->put('user', $user);

    return $answer($user);
});

// As Laravel's logout does: the session emptied under a new id, and a new CSRF token.
$router->post('/logout', function (Request $request) use ($answer) {
    $request->session()->invalidate();
    $request->session()->regenerateToken();

    return $answer(null);
});

// The session's user; without one, the user unstick names in X-Auth-User (only unstick can
// set it: it removes every client copy).
$router->get('/me', function (Request $request) use ($answer) {
    return $answer($request->session()->get('user') ?? $request->header('X-Auth-User'));
});
