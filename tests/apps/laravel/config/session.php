<?php

return [
    'driver' => 'file',
    // Minutes; unstick's php-files old store takes the same as its gc_maxlifetime.
    'lifetime' => 120,
    'expire_on_close' => false,
    'encrypt' => false,
    // Each instance its own directory: a session lives on the instance that created it.
    'files' => env('SESSION_FILES', storage_path('framework/sessions')),
    'lottery' => [2, 100],
    'cookie' => 'laravel_session',
    'path' => '/',
    'domain' => null,
    'secure' => false,
    'http_only' => true,
    'same_site' => 'lax',
];
