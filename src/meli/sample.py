"""A synthetic, MercadoLibre-like dataset of product titles, generated offline.

It is the project's default data source: `dvc repro` on a fresh machine needs no network, yet
the vocabulary, fastText embeddings and classifiers still meet the real problem's difficulties in
small: Spanish and Portuguese titles, brands and model codes shared across categories, accessories
that reuse the words of the product they fit ("Funda Samsung Galaxy A10" is a case, not a phone),
dropped accents, typos, mixed capitalization, unequal category sizes and some wrong labels among
the rows marked "unreliable". A good model reaches high, but not perfect, balanced accuracy.

The vocabulary below is invented for this module. Generation is deterministic: the same
`(rows, seed)` gives a byte-identical table on any machine, because every random draw comes, in a
fixed order, from the raw PCG64 stream, whose output numpy guarantees never to change.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = ["COLUMNS", "generate"]

COLUMNS = ("title", "category", "language", "label_quality")

SPANISH = "spanish"
PORTUGUESE = "portuguese"
RELIABLE = "reliable"
UNRELIABLE = "unreliable"

# Proportions of the real challenge data, roughly.
PORTUGUESE_SHARE = 0.4
UNRELIABLE_SHARE = 0.3
# Share of unreliable rows whose category is wrong; reliable rows are always right.
WRONG_LABEL_SHARE = 0.17

MAX_TITLE_CHARS = 100
MAX_TITLE_WORDS = 15


@dataclass(frozen=True)
class Category:
    """One product category: the words its titles are made of, per language."""

    name: str
    weight: int  # relative frequency, 2 (rare) to 10 (common)
    nouns_es: tuple[str, ...]  # what the product is called; synonyms
    nouns_pt: tuple[str, ...]
    lines: tuple[str, ...]  # "Brand" or "Brand:Model"; model patterns, see _fill_pattern
    words_es: tuple[str, ...]  # attributes a seller would write
    words_pt: tuple[str, ...]
    specs: tuple[str, ...]  # language-neutral codes, numbers and units
    confusable: tuple[str, ...]  # categories a careless seller would pick instead
    bundles: tuple[str, ...]  # categories sold along with it: "celular + funda de regalo"
    accessory_for: str  # category whose noun follows "para" ("funda para celular")
    colored: bool


def _words(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split("|") if part.strip())


def _category(
    name: str,
    *,
    weight: int,
    es: str,
    pt: str,
    lines: str = "",
    words_es: str = "",
    words_pt: str = "",
    specs: str = "",
    confusable: str = "",
    bundles: str = "",
    accessory_for: str = "",
    colored: bool = True,
) -> Category:
    """Build a Category from compact '|'-separated word lists, so the catalogue stays readable."""
    return Category(
        name=name,
        weight=weight,
        nouns_es=_words(es),
        nouns_pt=_words(pt),
        lines=_words(lines),
        words_es=_words(words_es),
        words_pt=_words(words_pt),
        specs=_words(specs),
        confusable=_words(confusable),
        bundles=_words(bundles),
        accessory_for=accessory_for,
        colored=colored,
    )


# Brand and model lines shared by several categories: this overlap is what makes an accessory
# hard to tell from the product it fits. In patterns, "#" is a digit, "@" a capital letter and
# "{a-b}" an integer from a to b.
PHONES = (
    "Samsung:Galaxy A{1-9}0|Samsung:Galaxy J{1-9}|Samsung:Galaxy S{1-9}|"
    "Samsung:Galaxy J{1-9} Prime|Motorola:Moto G{1-9}|Motorola:Moto E{1-9}|"
    "Motorola:Moto G{1-9} Plus|Motorola:Moto Z{1-9} Play|Xiaomi:Redmi Note {1-9}|"
    "Xiaomi:Redmi {1-9}A|Xiaomi:Mi A{1-9}|Apple:iPhone {1-9}|Apple:iPhone {1-9} Plus|"
    "Apple:iPhone X|LG:K{1-9}0|LG:K{1-9}|Huawei:P{1-9}0 Lite|Huawei:Y{1-9} 2019|Nokia:{1-9}.1|"
    "Alcatel"
)
LAPTOPS = (
    "Dell:Inspiron 15|Dell:Inspiron 14 {1-9}000|Dell:Latitude|Lenovo:Ideapad 3{1-9}0|"
    "Lenovo:Thinkpad|HP:Pavilion|HP:250 G{1-9}|Asus:Vivobook|Asus:X5{1-9}3|Acer:Aspire {1-9}|"
    "Samsung:Expert X{1-9}0|Apple:Macbook Air|Apple:Macbook Pro|Positivo|Bangho|Exo|Lenovo|"
    "Dell|HP|Asus"
)
CONSOLES = (
    "Sony:PlayStation {2-4}|Sony:Ps{2-4}|Sony:Ps4 Slim|Sony:Ps4 Pro|Microsoft:Xbox One|"
    "Microsoft:Xbox One S|Microsoft:Xbox 360|Nintendo:Switch|Nintendo:3ds|Nintendo:Wii U"
)
CARS = (
    "Volkswagen:Gol|Vw:Gol G{1-9}|Vw:Suran|Vw:Amarok|Vw:Fox|Fiat:Palio|Fiat:Uno|Fiat:Strada|"
    "Fiat:Siena|Chevrolet:Corsa|Chevrolet:Onix|Chevrolet:S10|Chevrolet:Celta|Ford:Fiesta|"
    "Ford:Ka|Ford:Ranger|Ford:Focus|Renault:Clio|Renault:Sandero|Renault:Kangoo|Peugeot:206|"
    "Peugeot:208|Peugeot:307|Toyota:Hilux|Toyota:Corolla|Honda:Civic|Honda:Fit"
)
APPLIANCES = (
    "Samsung|LG|Whirlpool|Electrolux|Brastemp|Consul|Philco|Mabe|Drean|Gafa|Midea|BGH|"
    "Panasonic|Patrick|Continental"
)
SPORTSWEAR = "Nike|Adidas|Puma|Fila|Topper|Olympikus|Mizuno|Umbro|Penalty|Under Armour|Reebok"
TOOLS = "Bosch|Makita|Dewalt|Black+Decker|Skil|Stanley|Tramontina|Vonder|Einhell|Gamma|Dowen Pagio"
CAR_YEARS = "{1996-2019}|{2005-2019}|{2008-2016}/{2017-2019}"
PART_NUMBERS = "{1000000-9999999}|#########|@@{100-999}|{10000-99999}-@"

CATALOGUE: tuple[Category, ...] = (
    # --- phones, computers, audio, games
    _category(
        "CELLPHONES",
        weight=10,
        es="celular|smartphone|teléfono celular|móvil|teléfono",
        pt="celular|smartphone|telefone celular|aparelho celular|telefone",
        lines=PHONES,
        words_es="liberado|dual sim|pantalla 6.2|cámara 13mp|libre|en caja|4g lte|huella",
        words_pt="desbloqueado|dual chip|tela 6.2|câmera 13mp|vitrine|na caixa|4g|leitor digital",
        specs="16gb|32gb|64gb|128gb|2gb ram|3gb ram|4gb|octa core|android 9|@{1-9}0|nfc",
        confusable="CELLPHONE_CASES|SCREEN_PROTECTORS|CELLPHONE_CHARGERS|SMARTWATCHES",
        bundles="CELLPHONE_CASES|SCREEN_PROTECTORS|CELLPHONE_CHARGERS|HEADPHONES",
    ),
    _category(
        "CELLPHONE_CASES",
        weight=6,
        es="funda|carcasa|estuche|case|protector|funda rígida",
        pt="capa|capinha|case|capa protetora|capa carteira",
        lines=PHONES + "|Spigen|Otterbox|Ringke|Nillkin",
        words_es="silicona|antigolpe|transparente|con tapa|flip cover|magnética|tipo libro|"
        "con anillo|reforzada|3 en 1",
        words_pt="silicone|anti impacto|transparente|com tampa|flip|magnética|tipo carteira|"
        "com anel|reforçada|3 em 1",
        specs="tpu|360|@{1-9}0|x2",
        confusable="CELLPHONES|SCREEN_PROTECTORS",
        bundles="SCREEN_PROTECTORS",
        accessory_for="CELLPHONES",
    ),
    _category(
        "SCREEN_PROTECTORS",
        weight=4,
        es="vidrio templado|film protector|lámina protectora|protector de pantalla|templado",
        pt="película de vidro|película|vidro temperado|película protetora|película 3d",
        lines=PHONES,
        words_es="full cover|borde a borde|hidrogel|anti espía|cerámico|mate|curvo",
        words_pt="full cover|borda a borda|hidrogel|privacidade|cerâmica|fosca|curva",
        specs="9h|3d|5d|9d|0.3mm|x2|x3|@{1-9}0",
        confusable="CELLPHONE_CASES|CELLPHONES",
        bundles="CELLPHONE_CASES",
        accessory_for="CELLPHONES",
        colored=False,
    ),
    _category(
        "CELLPHONE_CHARGERS",
        weight=4,
        es="cargador|cargador rápido|fuente cargador|cargador de pared",
        pt="carregador|carregador turbo|fonte carregador|carregador de parede",
        lines="Samsung|Motorola|Xiaomi|Apple|LG|Kaidi|Xtrad|Anker|Baseus|Samsung:Turbo Power",
        words_es="usb tipo c|micro usb|carga rápida|con cable|original|doble usb|para auto",
        words_pt="usb tipo c|micro usb|carga rápida|com cabo|original|duas usb|veicular",
        specs="2a|3a|18w|15w|25w|5v|1m|2m|qc 3.0|lightning",
        confusable="CELLPHONES|HEADPHONES",
        accessory_for="CELLPHONES",
    ),
    _category(
        "HEADPHONES",
        weight=6,
        es="auriculares|audífonos|cascos|auricular|vincha",
        pt="fone de ouvido|headphone|headset|fone|fone bluetooth",
        lines="JBL:T{1-9}00|JBL:Tune {1-9}00bt|Sony:Mdr Zx{1-9}10|Samsung:Level|Xiaomi:Airdots|"
        "Apple:Airpods|Philips|Beats:Solo {1-9}|Sennheiser|Motorola|Kanen",
        words_es="bluetooth|inalámbricos|in ear|manos libres|con micrófono|cancelación de ruido|"
        "deportivos|plegables",
        words_pt="bluetooth|sem fio|intra auricular|com microfone|cancelamento de ruído|esportivo|"
        "dobrável|estéreo",
        specs="p2|3.5mm|5.0|tws|20h|i{1-9}2",
        confusable="SPEAKERS|CELLPHONE_CHARGERS|MOTORCYCLE_HELMETS",
    ),
    _category(
        "SPEAKERS",
        weight=4,
        es="parlante|bocina|altavoz|parlante portátil|torre de sonido",
        pt="caixa de som|caixinha de som|alto falante|caixa amplificada|som portátil",
        lines="JBL:Flip {1-9}|JBL:Charge {1-9}|JBL:Go {1-9}|Sony:Srs Xb{1-9}0|Philips|Xiaomi|"
        "Lenoxx|Gradiente|Mondial|Noblex|Philco",
        words_es="bluetooth|portátil|resistente al agua|con radio fm|recargable|karaoke|luces led",
        words_pt="bluetooth|portátil|à prova d'água|rádio fm|recarregável|karaokê|luz led",
        specs="{1-9}0w|{1-9}00w|ip67|usb|sd|aux|10h",
        confusable="HEADPHONES|TELEVISIONS",
    ),
    _category(
        "NOTEBOOKS",
        weight=6,
        es="notebook|laptop|portátil|computadora portátil|netbook",
        pt="notebook|laptop|computador portátil|ultrabook|netbook",
        lines=LAPTOPS,
        words_es="core i5|core i7|core i3|ryzen 5|pantalla 15.6|teclado español|con garantía",
        words_pt="core i5|core i7|core i3|ryzen 5|tela 15.6|teclado abnt2|com garantia",
        specs='4gb|8gb ram|16gb|ssd 240gb|ssd 480gb|1tb|500gb|hd|full hd|win 10|15.6|14"',
        confusable="NOTEBOOK_BAGS|COMPUTER_KEYBOARDS|BACKPACKS",
        bundles="NOTEBOOK_BAGS|COMPUTER_MICE|BACKPACKS",
        colored=False,
    ),
    _category(
        "NOTEBOOK_BAGS",
        weight=3,
        es="maletín|funda para notebook|bolso para notebook|mochila porta notebook|portafolio",
        pt="maleta para notebook|case para notebook|bolsa para notebook|pasta executiva|"
        "mochila para notebook",
        lines="Samsonite|Targus|Dell|Lenovo|HP|Xiaomi|Swissport|Wenger|Everlast",
        words_es="impermeable|acolchado|ejecutivo|con puerto usb|antirrobo|de cuero|con ruedas",
        words_pt="impermeável|acolchoada|executiva|com usb|antifurto|de couro|com rodinhas",
        specs='15.6|14|13.3"|17"|25l|30l',
        confusable="BACKPACKS|NOTEBOOKS|HANDBAGS",
        accessory_for="NOTEBOOKS",
    ),
    _category(
        "COMPUTER_KEYBOARDS",
        weight=3,
        es="teclado|teclado gamer|teclado mecánico|combo teclado y mouse",
        pt="teclado|teclado gamer|teclado mecânico|kit teclado e mouse",
        lines="Logitech:K{1-9}20|Logitech:G{1-9}13|Redragon:Kumara|Genius|HyperX:Alloy|Razer|"
        "Microsoft|Multilaser|Noga",
        words_es="inalámbrico|retroiluminado|en español|con ñ|usb|para pc|numérico",
        words_pt="sem fio|iluminado|abnt2|com ç|usb|para pc|numérico",
        specs="rgb|k{1-9}52|usb 2.0|outemu blue|switch red|2.4ghz",
        confusable="COMPUTER_MICE|NOTEBOOKS",
        bundles="COMPUTER_MICE",
    ),
    _category(
        "COMPUTER_MICE",
        weight=3,
        es="mouse|ratón|mouse gamer|mouse óptico",
        pt="mouse|mouse gamer|mouse óptico|mouse sem fio",
        lines="Logitech:M{1-9}0|Logitech:G{1-9}03|Redragon:Cobra|Razer:Deathadder|Genius|HyperX|"
        "Microsoft|Multilaser",
        words_es="6 botones|inalámbrico|ergonómico|usb|para notebook|silencioso|recargable",
        words_pt="6 botões|sem fio|ergonômico|usb|para notebook|silencioso|recarregável",
        specs="{1-9}200 dpi|1600dpi|rgb|2.4ghz|m{1-9}",
        confusable="COMPUTER_KEYBOARDS|GAMEPADS",
        bundles="COMPUTER_KEYBOARDS",
    ),
    _category(
        "TELEVISIONS",
        weight=6,
        es="televisor|smart tv|tv led|televisión|led smart tv|tele",
        pt="televisão|smart tv|tv led|televisor|tv smart",
        lines="Samsung|LG|Philips|Sony|TCL|Philco|AOC|Panasonic|Hisense|Noblex|Semp Toshiba|Sanyo",
        words_es="{32-55} pulgadas|4k ultra hd|full hd|netflix|wifi|sintonizador digital|"
        "pantalla plana|curvo",
        words_pt="{32-55} polegadas|4k ultra hd|full hd|netflix|wifi|conversor digital|tela plana|"
        "curva",
        specs='32"|40"|43"|50"|55"|65"|uhd|hdr|3 hdmi|@{1-9}{10-99}',
        confusable="TV_WALL_MOUNTS|SPEAKERS",
        bundles="TV_WALL_MOUNTS",
        colored=False,
    ),
    _category(
        "TV_WALL_MOUNTS",
        weight=3,
        es="soporte para tv|soporte de pared|rack para tv|soporte tv|soporte articulado",
        pt="suporte para tv|suporte de parede|rack para tv|suporte tv|suporte articulado",
        lines="Elg|Brasforma|Multivisão|Aiwa|Kanji|Samsung|LG|Noblex",
        words_es="hasta {30-60}kg|articulado|fijo|inclinable|brazo extensible|reforzado|giratorio",
        words_pt="até {30-60}kg|articulado|fixo|inclinável|braço extensível|reforçado|giratório",
        specs='vesa 400x400|vesa 200x200|14 a 55"|32"|42"|60"',
        confusable="TELEVISIONS",
        accessory_for="TELEVISIONS",
    ),
    _category(
        "VIDEO_GAME_CONSOLES",
        weight=4,
        es="consola|videojuego|consola de videojuegos",
        pt="console|videogame|console de videogame",
        lines=CONSOLES,
        words_es="con 2 joysticks|con juegos|nuevo sellado|edición limitada|con caja|chipeada",
        words_pt="com 2 controles|com jogos|lacrado|edição limitada|com caixa|desbloqueado",
        specs="500gb|1tb|32gb|slim|pro|hdmi|{1-9}.0",
        confusable="VIDEO_GAMES|GAMEPADS",
        bundles="GAMEPADS|VIDEO_GAMES",
        colored=False,
    ),
    _category(
        "VIDEO_GAMES",
        weight=4,
        es="juego|videojuego|juego físico",
        pt="jogo|game|jogo físico|mídia física",
        lines="Fifa 1{1-9}|Pes 20{1-9}0|God Of War|Call Of Duty|Gta V|Mario Kart {1-9}|Zelda|"
        "Minecraft|Red Dead Redemption {1-9}|Spider-man|Crash Bandicoot",
        words_es="físico|original|sellado|en español|digital|edición juego del año",
        words_pt="mídia física|original|lacrado|em português|digital|edição completa",
        specs="ps4|ps3|xbox one|xbox 360|switch|pc|cd",
        confusable="VIDEO_GAME_CONSOLES|GAMEPADS",
        colored=False,
    ),
    _category(
        "GAMEPADS",
        weight=4,
        es="joystick|control|mando|joystick inalámbrico",
        pt="controle|joystick|manete|controle sem fio",
        lines="Sony:Dualshock {1-9}|Microsoft:Xbox One|Nintendo:Pro Controller|Knup|Genius|"
        "Logitech",
        words_es="inalámbrico|con cable|original|recargable|para pc|vibración",
        words_pt="sem fio|com fio|original|recarregável|para pc|vibração",
        specs="ps4|ps3|xbox one|switch|usb|bluetooth",
        confusable="VIDEO_GAME_CONSOLES|VIDEO_GAMES|COMPUTER_MICE",
        bundles="VIDEO_GAMES",
        accessory_for="VIDEO_GAME_CONSOLES",
    ),
    # --- home appliances and kitchen
    _category(
        "REFRIGERATORS",
        weight=6,
        es="heladera|refrigerador|nevera|heladera con freezer|freezer",
        pt="geladeira|refrigerador|geladeira duplex|freezer",
        lines=APPLIANCES,
        words_es="no frost|inverter|2 puertas|con dispenser|cíclica|acero inoxidable|ahorro",
        words_pt="frost free|inverter|duas portas|com dispenser|degelo|inox|econômica",
        specs="{200-550} litros|{250-450}l|110v|220v|a+|bivolt",
        confusable="WASHING_MACHINES|AIR_CONDITIONERS",
    ),
    _category(
        "WASHING_MACHINES",
        weight=4,
        es="lavarropas|lavadora|lavarropas automático|lavasecarropas",
        pt="máquina de lavar|lavadora|lava e seca|lavadora de roupas",
        lines=APPLIANCES,
        words_es="carga frontal|automático|semiautomático|inverter|agua caliente|centrifugado",
        words_pt="abertura frontal|automática|semiautomática|inverter|água quente|centrifuga",
        specs="{6-15}kg|{6-12} kg|1400 rpm|110v|220v|a+",
        confusable="REFRIGERATORS|MICROWAVES",
    ),
    _category(
        "MICROWAVES",
        weight=4,
        es="microondas|horno microondas|horno a microondas",
        pt="micro-ondas|microondas|forno micro-ondas|forno de micro-ondas",
        lines=APPLIANCES,
        words_es="con grill|digital|anafe|descongelar|espejado|de mesa",
        words_pt="com grill|digital|espelhado|descongelar|de bancada|função tira odor",
        specs="20 litros|{20-34}l|{700-1100}w|110v|220v",
        confusable="WASHING_MACHINES|COFFEE_MAKERS",
    ),
    _category(
        "AIR_CONDITIONERS",
        weight=4,
        es="aire acondicionado|split|aire split|equipo de aire",
        pt="ar condicionado|split|ar split|condicionador de ar",
        lines=APPLIANCES + "|Surrey|Springer|Elgin|Carrier|Hitachi|Gree|Fujitsu",
        words_es="{2-6}000 frigorías|frío calor|inverter|frío solo|bajo consumo|con instalación|"
        "portátil",
        words_pt="quente e frio|inverter|só frio|baixo consumo|com instalação|portátil",
        specs="{9-24}000 btus|12000btu|2250w|220v|a++",
        confusable="REFRIGERATORS",
    ),
    _category(
        "BLENDERS",
        weight=3,
        es="licuadora|minipimer|licuadora de vaso|mixer",
        pt="liquidificador|mixer|liquidificador de copo|mini processador",
        lines="Oster|Philips:Walita|Arno|Mondial|Britania|Black+Decker|Liliana|Atma|Philco|"
        "Electrolux",
        words_es="vaso de vidrio|5 velocidades|pulsador|jarra|cuchillas de acero|con picador",
        words_pt="copo de vidro|5 velocidades|pulsar|jarra|lâminas de aço|com filtro",
        specs="1.5l|2l|1.25l|{400-1200}w|110v|220v",
        confusable="COFFEE_MAKERS|KITCHEN_KNIVES",
    ),
    _category(
        "COFFEE_MAKERS",
        weight=4,
        es="cafetera|cafetera express|cafetera de filtro|cafetera italiana",
        pt="cafeteira|cafeteira expresso|cafeteira elétrica|cafeteira italiana",
        lines="Nespresso:Inissia|Nescafé:Dolce Gusto|Oster|Philips|Britania|Mondial|Electrolux|"
        "Moulinex|Peabody|Atma",
        words_es="{6-36} tazas|de cápsulas|espresso|automática|con molinillo|jarra térmica|"
        "de aluminio",
        words_pt="{6-36} xícaras|de cápsulas|expresso|automática|com moedor|jarra térmica|"
        "de alumínio",
        specs="15 bar|19 bar|1.2l|{600-1500}w|110v|220v",
        confusable="BLENDERS|MICROWAVES",
    ),
    _category(
        "VACUUM_CLEANERS",
        weight=3,
        es="aspiradora|aspiradora robot|aspiradora de mano|aspirador",
        pt="aspirador de pó|aspirador|robô aspirador|aspirador vertical",
        lines="Electrolux|Philips|Black+Decker|WAP|Samsung|Xiaomi|Arno|Mondial|Atma|Kärcher",
        words_es="sin bolsa|ciclónica|inalámbrica|con filtro hepa|agua y polvo|portátil",
        words_pt="sem saco|ciclone|sem fio|com filtro hepa|água e pó|portátil",
        specs="{1000-2200}w|1.5l|110v|220v|hepa",
        confusable="BLENDERS|HAIR_DRYERS",
    ),
    _category(
        "KITCHEN_KNIVES",
        weight=3,
        es="cuchillo|juego de cuchillos|set de cuchillos|cuchillo de chef|cuchilla",
        pt="faca|jogo de facas|kit facas|faca de chef|cutelo",
        lines="Tramontina|Mundial|Zwilling|Victorinox|Wüsthof|Arcos|Ginsu|Brinox",
        words_es="{6-12} piezas|acero inoxidable|de cerámica|mango de madera|para asado|con taco|"
        "profesional",
        words_pt="{6-12} peças|aço inox|de cerâmica|cabo de madeira|para churrasco|com cepo|"
        "profissional",
        specs='8"|6"|10"|20cm|x{3-6}',
        confusable="COOKWARE|BLENDERS",
    ),
    _category(
        "COOKWARE",
        weight=4,
        es="olla|batería de cocina|cacerola|sartén|juego de ollas|olla a presión",
        pt="panela|jogo de panelas|caçarola|frigideira|panela de pressão",
        lines="Tramontina|Rochedo|Hudson|Tefal|Essen|Marmicoc|Panelux|Brinox|Eirilar|Carol",
        words_es="{5-10} piezas|antiadherente|de teflón|de hierro|acero inoxidable|"
        "con tapa de vidrio|de aluminio",
        words_pt="{5-10} peças|antiaderente|de teflon|de ferro|aço inox|com tampa de vidro|"
        "de alumínio",
        specs="{16-30}cm|{3-7}l|4.5 litros|x{2-5}",
        confusable="KITCHEN_KNIVES|MICROWAVES|CAR_BATTERIES",
        bundles="KITCHEN_KNIVES",
    ),
    # --- home and furniture
    _category(
        "BED_SHEETS",
        weight=4,
        es="sábanas|juego de sábanas|sábana ajustable|juego de cama",
        pt="jogo de lençol|lençol|jogo de cama|lençol com elástico",
        lines="Cannon|Santista|Buddemeyer|Altenburg|Arredo|Palette|Karsten|Teka",
        words_es="{144-400} hilos|{3-4} piezas|2 plazas|1 plaza|queen|king|de algodón|microfibra|"
        "con elástico|percal",
        words_pt="{150-400} fios|{3-4} peças|casal|solteiro|queen|king|de algodão|microfibra|"
        "com elástico|percal",
        specs="140x190|160x200|200x200|2.20x2.40|x{2-3}",
        confusable="MATTRESSES",
    ),
    _category(
        "MATTRESSES",
        weight=4,
        es="colchón|colchón de resortes|colchón de espuma|sommier",
        pt="colchão|colchão de molas|colchão de espuma|cama box",
        lines="Piero|Cannon|Simmons|Ortobom|Castor|Gazin|Suavestar|Sealy|Inducol|Belmo",
        words_es="2 plazas|1 plaza|queen|king|resortes|espuma de alta densidad|pillow top",
        words_pt="casal|solteiro|queen|king|molas ensacadas|espuma d33|pillow top",
        specs="140x190|80x190|160x200|200x200|{18-32}cm",
        confusable="BED_SHEETS|SOFAS",
        bundles="BED_SHEETS",
        colored=False,
    ),
    _category(
        "SOFAS",
        weight=2,
        es="sillón|sofá|sofá cama|sillón de 3 cuerpos|futón",
        pt="sofá|sofá cama|sofá retrátil|poltrona|estofado",
        lines="Tok Stok|Mobly|Linoforte|Americanas|Platino|Zara Home",
        words_es="3 cuerpos|2 cuerpos|reclinable|chenille|cuero ecológico|esquinero|de pana",
        words_pt="3 lugares|2 lugares|reclinável|suede|couro sintético|de canto|de veludo",
        specs="{150-250}cm|2.10m|l",
        confusable="MATTRESSES",
    ),
    _category(
        "LIGHT_BULBS",
        weight=3,
        es="lámpara led|foco led|bombilla|lámpara|foco",
        pt="lâmpada led|lâmpada|lâmpada bulbo|lâmpada fluorescente",
        lines="Philips|Osram|Sylvania|Taschibra|Macroled|Interlight|Ledvance|Candela",
        words_es="luz fría|luz cálida|bajo consumo|dimerizable|rosca común|pack ahorro",
        words_pt="luz fria|luz quente|econômica|dimerizável|rosca comum|kit economia",
        specs="e27|e14|gu10|{5-20}w|bivolt|6500k|3000k|x{2-10}|h4",
        confusable="CAR_HEADLIGHTS",
        colored=False,
    ),
    # --- automotive
    _category(
        "AUTOMOTIVE_DOORS",
        weight=3,
        es="puerta|puerta delantera|puerta trasera|puerta de auto",
        pt="porta|porta dianteira|porta traseira|porta de carro",
        lines=CARS,
        words_es="izquierda|derecha|delantera|trasera|sin detalles|completa|5 puertas|original",
        words_pt="esquerda|direita|dianteira|traseira|sem detalhes|completa|4 portas|original",
        specs=CAR_YEARS + "|" + PART_NUMBERS,
        confusable="AUTOMOTIVE_REARVIEW_MIRRORS|CAR_HEADLIGHTS",
        bundles="AUTOMOTIVE_REARVIEW_MIRRORS",
    ),
    _category(
        "CAR_HEADLIGHTS",
        weight=4,
        es="faro|óptica|faro delantero|faro principal|óptica delantera",
        pt="farol|farol dianteiro|farol principal|farol de milha",
        lines=CARS + "|Arteb|Depo|Hella|Valeo",
        words_es="izquierdo|derecho|led|xenón|con lupa|máscara negra|original|auxiliar",
        words_pt="esquerdo|direito|led|xenon|com lupa|máscara negra|original|auxiliar",
        specs=CAR_YEARS + "|h4|h7|h1|" + PART_NUMBERS,
        confusable="CAR_TAIL_LIGHTS|LIGHT_BULBS",
        bundles="LIGHT_BULBS",
        colored=False,
    ),
    _category(
        "CAR_TAIL_LIGHTS",
        weight=2,
        es="faro trasero|óptica trasera|calavera|luz trasera|faro de cola",
        pt="lanterna traseira|lanterna|lanterna de freio|farol traseiro",
        lines=CARS + "|Arteb|Fitam|Depo|Baiml",
        words_es="izquierdo|derecho|led|ahumado|cristal|original|con circuito",
        words_pt="esquerda|direita|led|fumê|cristal|original|com soquete",
        specs=CAR_YEARS + "|" + PART_NUMBERS,
        confusable="CAR_HEADLIGHTS",
        colored=False,
    ),
    _category(
        "AUTOMOTIVE_REARVIEW_MIRRORS",
        weight=3,
        es="espejo retrovisor|retrovisor|espejo lateral|espejo exterior",
        pt="retrovisor|espelho retrovisor|retrovisor externo|espelho lateral",
        lines=CARS + "|Metagal|Fitam",
        words_es="eléctrico|manual|izquierdo|derecho|con luz de giro|rebatible|con control",
        words_pt="elétrico|manual|esquerdo|direito|com pisca|retrátil|com controle",
        specs=CAR_YEARS + "|" + PART_NUMBERS,
        confusable="AUTOMOTIVE_DOORS",
    ),
    _category(
        "CAR_TIRES",
        weight=4,
        es="neumático|cubierta|llanta|neumáticos|goma",
        pt="pneu|pneus|pneu aro|pneu de carro",
        lines="Pirelli:P400|Pirelli:Cinturato|Michelin:Energy|Goodyear:Direction|Bridgestone|"
        "Firestone:F-600|Fate|Continental|Dunlop|Kumho",
        words_es="rodado {13-18}|para auto|para camioneta|4 estaciones|run flat|x4",
        words_pt="aro {13-18}|para carro|para caminhonete|4 estações|run flat|kit 4",
        specs="{165-215}/{55-70} r{13-17}|175/70 r13|205/55 r16|185/65r15|{82-91}h",
        confusable="CAR_WHEELS",
        bundles="CAR_WHEELS",
        colored=False,
    ),
    _category(
        "CAR_WHEELS",
        weight=3,
        es="llanta de aleación|llanta deportiva|llantas|rin",
        pt="roda de liga leve|roda|rodas|calota",
        lines=CARS + "|Binno|Scorro|Krmai|Zeta|Mangels",
        words_es="de aleación|deportiva|rodado {13-18}|juego x4|con bulones|diamantada",
        words_pt="liga leve|esportiva|aro {13-18}|jogo 4|com parafusos|diamantada",
        specs='r15|r14|r16|4x100|5x100|4x108|{13-18}"',
        confusable="CAR_TIRES",
        bundles="CAR_TIRES",
    ),
    _category(
        "CAR_BATTERIES",
        weight=3,
        es="batería|batería de auto|acumulador",
        pt="bateria|bateria automotiva|bateria de carro",
        lines="Moura|Heliar|Willard|Bosch|Clarion|Zetta|Varta|Cral|Pioneiro|Ac Delco",
        words_es="para auto|libre mantenimiento|12 meses de garantía|sellada|para moto",
        words_pt="para carro|livre de manutenção|garantia 12 meses|selada|para moto",
        specs="12v|{45-95}ah|12x{45-90}|{300-700} cca|m{20-80}gd",
        confusable="CELLPHONE_CHARGERS|COOKWARE",
        colored=False,
    ),
    _category(
        "MOTORCYCLE_HELMETS",
        weight=4,
        es="casco|casco de moto|casco integral|casco rebatible",
        pt="capacete|capacete de moto|capacete fechado|capacete escamoteável",
        lines="LS2:Ff{1-9}20|Pro Tork:Liberty|Shark|HJC|Nzi|Hawk|Norisk|Shiro|Vertigo|Agv:K{1-9}",
        words_es="talle {54-62}|integral|rebatible|abierto|con visor|doble visor|certificado|mate",
        words_pt="tamanho {54-62}|fechado|escamoteável|aberto|com viseira|viseira solar|inmetro|"
        "fosco",
        specs="{56-62}|s|m|l|xl",
        confusable="HEADPHONES|BICYCLES",
    ),
    # --- clothing, shoes and accessories
    _category(
        "SNEAKERS",
        weight=10,
        es="zapatillas|zapatilla|zapatillas deportivas|tenis|zapatillas urbanas",
        pt="tênis|tenis|tênis esportivo|sapatênis|tênis casual",
        lines="Nike:Air Max|Nike:Air Force|Nike:Revolution {1-9}|Adidas:Superstar|"
        "Adidas:Stan Smith|Adidas:Ultraboost|Puma:Suede|Fila|Topper|Olympikus|Mizuno:Wave|"
        "Converse:All Star|Vans:Old Skool|Reebok:Classic|Asics:Gel",
        words_es="hombre|mujer|niños|running|urbanas|de cuero|talle {34-45}|originales",
        words_pt="masculino|feminino|infantil|corrida|casual|de couro|tamanho {34-44}|original",
        specs="{34-45}|n° {34-44}|{36-44} al {38-46}|97|270|v{1-9}",
        confusable="FOOTBALL_BOOTS|T_SHIRTS",
    ),
    _category(
        "FOOTBALL_BOOTS",
        weight=4,
        es="botines|botín|botines de fútbol|taquitos|botines futsal",
        pt="chuteira|chuteira society|chuteira de campo|chuteira futsal",
        lines="Nike:Mercurial|Nike:Tiempo|Adidas:Predator|Adidas:X 1{1-9}.3|Puma:Future|Umbro|"
        "Penalty|Topper|Joma|Mizuno",
        words_es="césped sintético|papi fútbol|campo|con tapones|hombre|niños|talle {34-45}",
        words_pt="society|futsal|campo|com travas|masculina|infantil|tamanho {34-44}",
        specs="fg|tf|ic|{34-45}|tf{1-9}",
        confusable="SNEAKERS|SOCCER_BALLS",
        bundles="SOCCER_BALLS",
    ),
    _category(
        "T_SHIRTS",
        weight=10,
        es="remera|camiseta|playera|remera básica|musculosa",
        pt="camiseta|camisa|blusa|camiseta básica|regata",
        lines=SPORTSWEAR + "|Hering|Lacoste|Polo Ralph Lauren|Tommy Hilfiger|Levi's|Zara|Reserva",
        words_es="talle {1-5}|100% algodón|de algodón|manga corta|manga larga|estampada|lisa|"
        "cuello redondo|dry fit|hombre|mujer|unisex",
        words_pt="100% algodão|de algodão|manga curta|manga longa|estampada|lisa|gola redonda|"
        "dry fit|masculina|feminina|unissex",
        specs="s|m|l|xl|xxl|p|g|gg",
        confusable="DRESSES|SNEAKERS",
    ),
    _category(
        "DRESSES",
        weight=4,
        es="vestido|vestido largo|vestido de fiesta|vestido corto|solero",
        pt="vestido|vestido longo|vestido de festa|vestido curto|saída de praia",
        lines="Zara|Farm|Forever 21|Rapsodia|Kosiuko|Cantão|Renner|Shein",
        words_es="talle {36-46}|de fiesta|de encaje|estampado|mujer|de noche|ajustado|floreado|"
        "talle único",
        words_pt="tamanho {36-46}|de festa|de renda|estampado|feminino|de noite|justo|floral|"
        "tamanho único",
        specs="s|m|l|p|g|{36-46}",
        confusable="T_SHIRTS|JEANS",
    ),
    _category(
        "JEANS",
        weight=4,
        es="jean|pantalón jean|jeans|pantalón de jean|chupín",
        pt="calça jeans|jeans|calça|bermuda jeans",
        lines="Levi's:50{1-9}|Levi's:5{1-9}1|Wrangler|Lee|Colcci|Diesel|Zara|Kevingston|"
        "Ona Saez|Rusty",
        words_es="tiro alto|skinny|elastizado|recto|mujer|hombre|roturas|talle {36-48}|chupín",
        words_pt="cintura alta|skinny|com elastano|reta|feminina|masculina|rasgada|"
        "tamanho {36-48}|slim",
        specs="{28-46}|w{28-38}|l{30-34}",
        confusable="DRESSES|T_SHIRTS",
        bundles="T_SHIRTS",
    ),
    _category(
        "BACKPACKS",
        weight=6,
        es="mochila|mochila escolar|mochila urbana|mochila de viaje",
        pt="mochila|mochila escolar|mochila de viagem|bolsa mochila",
        lines=SPORTSWEAR + "|Jansport|Samsonite|Xtrem|Wilson|Everlast|Herschel|Dermiwil|Head",
        words_es="escolar|urbana|impermeable|porta notebook|con ruedas|deportiva|reforzada",
        words_pt="escolar|casual|impermeável|para notebook|com rodinhas|esportiva|reforçada",
        specs='{18-45}l|{15-20}"|usb',
        confusable="NOTEBOOK_BAGS|HANDBAGS|T_SHIRTS",
    ),
    _category(
        "HANDBAGS",
        weight=4,
        es="cartera|bolso|cartera de mujer|bandolera|bolso de mano",
        pt="bolsa|bolsa feminina|bolsa de mão|bolsa transversal|bolsa tiracolo",
        lines="Prune|Michael Kors|Chenson|Arezzo|Schutz|Guess|Zara|Amphora|Santa Lolla",
        words_es="de cuero|cuero ecológico|grande|con cadena|tote|de hombro|mujer",
        words_pt="de couro|couro sintético|grande|com corrente|tote|de ombro|feminina",
        specs="{20-40}cm|x{2-3}",
        confusable="BACKPACKS|NOTEBOOK_BAGS",
    ),
    _category(
        "WRISTWATCHES",
        weight=6,
        es="reloj|reloj pulsera|reloj de hombre|reloj de mujer|reloj analógico",
        pt="relógio|relógio de pulso|relógio masculino|relógio feminino|relógio analógico",
        lines="Casio:G-shock|Casio:Mtp-{1-9}3|Orient|Technos|Mormaii|Fossil|Seiko|Citizen|Tommy "
        "Hilfiger|Guess|Festina|Mistral|Swiss Army",
        words_es="analógico|digital|sumergible|acero inoxidable|malla de cuero|cronógrafo|dorado",
        words_pt="analógico|digital|à prova d'água|aço inox|pulseira de couro|cronógrafo|dourado",
        specs="5atm|10atm|wr50|{38-48}mm|@{100-999}",
        confusable="SMARTWATCHES",
    ),
    _category(
        "SMARTWATCHES",
        weight=4,
        es="smartwatch|reloj inteligente|smartband|pulsera inteligente",
        pt="smartwatch|relógio inteligente|smartband|pulseira inteligente",
        lines="Samsung:Galaxy Watch|Samsung:Gear S{1-9}|Apple:Watch Series {1-9}|"
        "Xiaomi:Mi Band {1-9}|Amazfit:Bip|Garmin:Forerunner {1-9}{1-9}5|Huawei:Band {1-9}|Fitbit",
        words_es="bluetooth|monitor cardíaco|notificaciones|gps|para android|sumergible",
        words_pt="bluetooth|monitor cardíaco|notificações|gps|para android|à prova d'água",
        specs='ip67|ip68|1.3"|{38-46}mm|d20|y68|b57',
        confusable="WRISTWATCHES|CELLPHONES",
    ),
    _category(
        "SUNGLASSES",
        weight=4,
        es="anteojos de sol|lentes de sol|gafas de sol|anteojos",
        pt="óculos de sol|óculos|óculos escuro|óculos solar",
        lines="Ray-Ban:Aviator|Ray-Ban:Wayfarer|Oakley:Holbrook|Oakley:Juliet|Chilli Beans|"
        "Prada|Carrera|Vogue|Mormaii|Infinit",
        words_es="polarizados|espejados|aviador|hombre|mujer|con estuche|protección uv",
        words_pt="polarizado|espelhado|aviador|masculino|feminino|com case|proteção uv",
        specs="uv400|rb{3000-4200}|{50-62}mm",
        confusable="WRISTWATCHES",
    ),
    # --- baby and toys
    _category(
        "BABY_STROLLERS",
        weight=4,
        es="cochecito|carrito de bebé|coche de bebé|cochecito paraguas|coche paseo",
        pt="carrinho de bebê|carrinho|carrinho de passeio|carrinho guarda-chuva",
        lines="Chicco|Burigotto|Galzerano|Infanti|Graco|Maxi-Cosi|Mega Baby|Love|Cosco|Kiddo",
        words_es="hasta 15kg|{3-4} ruedas|travel system|con huevito|reclinable|paraguas|liviano|"
        "plegable|3 posiciones",
        words_pt="até 15kg|{3-4} rodas|travel system|com bebê conforto|reclinável|guarda-chuva|"
        "leve|dobrável|3 posições",
        specs="0 a 15kg|{0-36} meses",
        confusable="BABY_CAR_SEATS",
        bundles="BABY_CAR_SEATS",
    ),
    _category(
        "BABY_CAR_SEATS",
        weight=3,
        es="silla de auto|butaca para auto|huevito|silla de bebé para auto|booster",
        pt="cadeirinha|cadeira para auto|bebê conforto|cadeirinha de carro|assento de elevação",
        lines="Chicco|Burigotto|Galzerano|Infanti|Graco|Maxi-Cosi|Cosco|Safety 1st|Kiddo|Britax",
        words_es="{0-12} años|isofix|grupo 0+|reclinable|con base|para auto|homologada|reversible",
        words_pt="{0-12} anos|isofix|grupo 0+|reclinável|com base|para carro|inmetro|reversível",
        specs="0 a 25kg|0-13kg|9 a 36kg",
        confusable="BABY_STROLLERS",
    ),
    _category(
        "DIAPERS",
        weight=6,
        es="pañales|pañal|pañales descartables|pañales para adultos",
        pt="fraldas|fralda|fralda descartável|fralda geriátrica",
        lines="Pampers:Confort Sec|Pampers:Premium Care|Huggies:Supreme|Huggies:Natural Care|"
        "Babysec|Pom Pom|MamyPoko|Estrella|Plenitud|Turma Da Mônica",
        words_es="talle g|talle xg|talle m|recién nacido|pants|hiperpack|mega pack|bebé",
        words_pt="tamanho g|tamanho xg|tamanho m|recém nascido|pants|pacotão|mega pack|bebê",
        specs="x{20-120}|{30-90} unidades|xxg|rn|p|m|g|xg",
        confusable="BABY_BOTTLES",
        colored=False,
    ),
    _category(
        "BABY_BOTTLES",
        weight=2,
        es="mamadera|biberón|mamadera anticólicos|vaso antiderrame",
        pt="mamadeira|mamadeira anticólica|chuquinha|copo de transição",
        lines="Avent|Nuk|Chicco|Lillo|Kuka|Dr Brown's|Tommee Tippee|Mam|Pigeon",
        words_es="anticólicos|de vidrio|libre de bpa|tetina de silicona|bebé|recién nacido",
        words_pt="anticólica|de vidro|livre de bpa|bico de silicone|bebê|recém nascido",
        specs="{120-330}ml|260ml|x{2-3}|0m+|6m+",
        confusable="DIAPERS",
    ),
    _category(
        "STUFFED_TOYS",
        weight=2,
        es="peluche|muñeco de peluche|oso de peluche|peluche gigante",
        pt="pelúcia|bicho de pelúcia|urso de pelúcia|boneco de pelúcia",
        lines="Disney|Pokémon|Phi Phi Toys|Buba|Minions|Marvel|Paw Patrol|Sanrio",
        words_es="gigante|original|suave|para bebé|musical|antialérgico|unicornio|osito",
        words_pt="gigante|original|macio|para bebê|musical|antialérgico|unicórnio|ursinho",
        specs="{20-120}cm|1 metro|x{2-3}",
        confusable="BABY_BOTTLES|DIAPERS",
    ),
    # --- sports
    _category(
        "BICYCLES",
        weight=4,
        es="bicicleta|bici|bicicleta mountain bike|bicicleta de paseo",
        pt="bicicleta|bike|bicicleta aro 29|mountain bike",
        lines="Caloi|Venzo|Trek|Oggi|Specialized|Topmega|Raleigh|Olmo|Sense|Houston|Gw",
        words_es="cuadro {15-21}|rodado {12-29}|21 velocidades|de aluminio|frenos a disco|"
        "suspensión|para niños|plegable",
        words_pt="quadro {15-21}|aro {12-29}|21 marchas|de alumínio|freio a disco|suspensão|"
        "infantil|dobrável",
        specs="r{16-29}|29er|mtb|shimano|{18-27}v",
        confusable="MOTORCYCLE_HELMETS|TREADMILLS",
        bundles="MOTORCYCLE_HELMETS",
    ),
    _category(
        "SOCCER_BALLS",
        weight=2,
        es="pelota de fútbol|pelota|balón|pelota número 5",
        pt="bola de futebol|bola|bola de campo|bola society",
        lines="Adidas:Telstar|Adidas:Tango|Nike:Strike|Penalty|Umbro|Topper|Drb|Mikasa|Molten",
        words_es="número 5|número 4|cancha|futsal|baby fútbol|oficial|cosida a mano",
        words_pt="número 5|campo|futsal|society|oficial|costurada|infantil",
        specs="n{3-5}|nº5|pro|x{2-10}",
        confusable="FOOTBALL_BOOTS",
    ),
    _category(
        "DUMBBELLS",
        weight=3,
        es="mancuerna|mancuernas|pesas|set de mancuernas|kettlebell",
        pt="halter|halteres|anilha|kit halteres|kettlebell",
        lines="Everlast|Kikos|Proaction|Gympro|Randers|Olympikus|Wellness",
        words_es="de fundición|engomadas|ajustables|par|gimnasio|con barra|de hierro",
        words_pt="de ferro fundido|emborrachado|ajustável|par|academia|com barra|revestido",
        specs="{1-20}kg|{2-10} kg|x2|{10-40}kg",
        confusable="TREADMILLS",
    ),
    _category(
        "TREADMILLS",
        weight=2,
        es="cinta de correr|caminadora|cinta eléctrica|trotadora",
        pt="esteira|esteira elétrica|esteira ergométrica|esteira de corrida",
        lines="Kikos|Athletic|Movement|Randers|Gallant|Olmo|Dream Fitness|Embreex|Everlast",
        words_es="eléctrica|plegable|motorizada|con inclinación|gimnasio|programas",
        words_pt="elétrica|dobrável|motorizada|com inclinação|academia|programas",
        specs="{10-18}km/h|{1-3}hp|110v|220v|{100-150}kg",
        confusable="BICYCLES|DUMBBELLS",
        colored=False,
    ),
    # --- tools
    _category(
        "ELECTRIC_DRILLS",
        weight=4,
        es="taladro|taladro percutor|atornillador|taladro inalámbrico",
        pt="furadeira|parafusadeira|furadeira de impacto|parafusadeira sem fio",
        lines=TOOLS,
        words_es="percutor|inalámbrico|con maletín|velocidad variable|reversible|con batería",
        words_pt="de impacto|sem fio|com maleta|velocidade variável|reversível|com bateria",
        specs='13mm|10mm|1/2"|3/8"|{450-1000}w|12v|18v|20v|110v|220v',
        confusable="ANGLE_GRINDERS|WRENCH_SETS|CAR_BATTERIES",
        bundles="WRENCH_SETS",
        colored=False,
    ),
    _category(
        "ANGLE_GRINDERS",
        weight=3,
        es="amoladora|amoladora angular|esmeriladora|pulidora",
        pt="esmerilhadeira|esmerilhadeira angular|lixadeira|politriz",
        lines=TOOLS,
        words_es="angular|de banco|con disco|profesional|inalámbrica|mango lateral",
        words_pt="angular|de bancada|com disco|profissional|sem fio|empunhadura lateral",
        specs='4 1/2"|115mm|7"|180mm|{650-2200}w|110v|220v|{10000-12000}rpm',
        confusable="ELECTRIC_DRILLS",
        colored=False,
    ),
    _category(
        "WRENCH_SETS",
        weight=2,
        es="juego de llaves|llave combinada|juego de tubos|llave francesa|llaves",
        pt="jogo de chaves|chave combinada|jogo de soquetes|chave inglesa|chaves",
        lines=TOOLS + "|Bahco|Gedore|Crossmaster",
        words_es="{8-120} piezas|combinadas|tubos|con crique|cromo vanadio|estriadas|con caja",
        words_pt="{8-120} peças|combinadas|soquetes|com catraca|cromo vanádio|estriadas|com estojo",
        specs='{6-32}mm|1/2"|3/4"|3/8"',
        confusable="ELECTRIC_DRILLS",
        colored=False,
    ),
    # --- beauty
    _category(
        "HAIR_STRAIGHTENERS",
        weight=4,
        es="planchita|plancha de pelo|alisadora|plancha para el pelo|buclera",
        pt="chapinha|prancha alisadora|prancha de cabelo|alisador|babyliss",
        lines="Gama|Philips|Remington|Taiff|Babyliss|Conair|Mondial|Britania|Atma|Wahl",
        words_es="de cerámica|de titanio|profesional|iónica|con vapor|temperatura regulable",
        words_pt="de cerâmica|de titânio|profissional|íons|a vapor|temperatura ajustável",
        specs='{180-480}°|230°c|bivolt|110v|220v|1 1/4"',
        confusable="HAIR_DRYERS",
        bundles="HAIR_DRYERS",
    ),
    _category(
        "HAIR_DRYERS",
        weight=4,
        es="secador de pelo|secador|secadora de cabello|secador profesional",
        pt="secador de cabelo|secador|secador profissional|secador portátil",
        lines="Gama|Philips|Remington|Taiff|Babyliss|Conair|Mondial|Britania|Parlux|Wahl",
        words_es="iónico|con difusor|profesional|plegable|aire frío|de viaje|turbo",
        words_pt="íons|com difusor|profissional|dobrável|ar frio|de viagem|turbo",
        specs="{1200-2400}w|2000w|bivolt|110v|220v",
        confusable="HAIR_STRAIGHTENERS|VACUUM_CLEANERS",
        bundles="HAIR_STRAIGHTENERS",
    ),
    _category(
        "PERFUMES",
        weight=6,
        es="perfume|eau de parfum|eau de toilette|fragancia|colonia",
        pt="perfume|colônia|eau de parfum|eau de toilette|deo colônia",
        lines="Carolina Herrera:212 Vip|Carolina Herrera:Good Girl|Paco Rabanne:1 Million|"
        "Paco Rabanne:Invictus|Natura:Kaiak|Boticário:Malbec|Calvin Klein:Ck One|Dior:Sauvage|"
        "Chanel:N°5|Lancôme:La Vie Est Belle|Antonio Banderas",
        words_es="hombre|mujer|original|importado|sellado|unisex|tester|de regalo",
        words_pt="masculino|feminino|original|importado|lacrado|unissex|tester|presente",
        specs="{30-200}ml|100ml|50ml|edp|edt|x{2-3}",
        confusable="LIPSTICKS",
        colored=False,
    ),
    _category(
        "LIPSTICKS",
        weight=2,
        es="labial|lápiz labial|labial líquido|brillo labial",
        pt="batom|batom líquido|batom matte|gloss labial",
        lines="Mac|Avon|Maybelline|Ruby Rose|Vult|Revlon|L'Oréal|Natura:Una|Boticário:Make B|"
        "Dailus",
        words_es="mate|larga duración|líquido|humectante|tono nude|kit|cremoso",
        words_pt="matte|longa duração|líquido|hidratante|tom nude|kit|cremoso",
        specs="{3-8}g|{3-10}ml|x{2-12}|n°{10-99}",
        confusable="PERFUMES",
    ),
)

CATEGORY_NAMES: tuple[str, ...] = tuple(category.name for category in CATALOGUE)
_CATEGORY_BY_NAME = {category.name: category for category in CATALOGUE}

# Words any seller might add to any title; they carry no information about the category.
GENERIC_WORDS = {
    SPANISH: _words(
        "nuevo|original|oferta|envío gratis|kit|x2|pack|promo|liquidación|importado|garantía|"
        "usado|premium|calidad|combo|lote|outlet|oficial|local|cuotas sin interés|mayorista|"
        "lo mejor|gtia"
    ),
    PORTUGUESE: _words(
        "novo|original|oferta|frete grátis|kit|x2|promoção|importado|garantia|usado|premium|"
        "qualidade|combo|lote|pronta entrega|lacrado|nf|envio imediato|oficial|atacado|"
        "12x sem juros|top"
    ),
}
COLORS = {
    SPANISH: _words(
        "negro|blanco|azul|rojo|gris|rosa|verde|dorado|plateado|beige|marrón|celeste|violeta|"
        "amarillo|naranja|bordó"
    ),
    PORTUGUESE: _words(
        "preto|branco|azul|vermelho|cinza|rosa|verde|dourado|prata|bege|marrom|azul marinho|"
        "roxo|amarelo|laranja|vinho"
    ),
}
# "para celular", "+ funda de regalo": how titles come to name another category's product.
FOR_WORD = {SPANISH: "para", PORTUGUESE: "para"}
BUNDLE_FORMS = {
    SPANISH: ("+ {}", "con {}", "con {} de regalo", "+ {} gratis"),
    PORTUGUESE: ("+ {}", "com {}", "com {} de brinde", "+ {} grátis"),
}

# The rates of each kind of noise, per title unless said otherwise. Sellers often type without
# accents: whole titles lose them, or single words do (so "algodón" and "algodon" both occur).
ACCENTLESS_TITLE_SHARE = 0.35
ACCENTLESS_WORD_SHARE = 0.08  # per word with an accent
TYPO_SHARE = 0.2  # one typo, in a word of four letters or more
NO_NOUN_SHARE = 0.2  # "Samsung Galaxy A10 32gb": the reader must guess from brand and specs
BUNDLE_SHARE = 0.15  # of categories with bundles: also names another product, "+ funda"
ACCESSORY_FOR_SHARE = 0.4  # an accessory names what it fits: "funda para celular"

_ACCENTS = str.maketrans(
    "áàâãäéêèëíìîïóòôõöúùûüçñÁÀÂÃÉÊÍÓÔÕÚÜÇÑ",
    "aaaaaeeeeiiiiooooouuuucnAAAAEEIOOOUUCN",
)
_PATTERN_PART = re.compile(r"\{(\d+)-(\d+)\}|[#@]")
_UPPERCASE = "ABCDEFGHJKLMNPRSTUVWXZ"


def _uniform_floats(seed: int) -> Iterator[float]:
    """Endless uniform floats in [0, 1) from the raw PCG64 stream, drawn in large blocks.

    Raw 64-bit outputs, unlike numpy's derived distributions, are guaranteed never to change
    between numpy versions; the top 53 bits of each make one float, as numpy itself does.
    """
    bits = np.random.PCG64(seed)
    while True:
        raw = bits.random_raw(1 << 16)
        yield from ((raw >> np.uint64(11)).astype(np.float64) * 2.0**-53).tolist()


class _Draws:
    """Every random decision of one generation, taken in a fixed order from one stream."""

    def __init__(self, seed: int) -> None:
        # A bound `next` is much cheaper than a method call, and generation makes millions.
        self.uniform = functools.partial(next, _uniform_floats(seed))

    def below(self, n: int) -> int:
        return int(self.uniform() * n)

    def chance(self, probability: float) -> bool:
        return self.uniform() < probability

    def choice(self, options: Sequence[str]) -> str:
        return options[int(self.uniform() * len(options))]

    def distinct(self, options: Sequence[str], count: int) -> list[str]:
        """Up to `count` different options, so that a title does not repeat an attribute."""
        pool = list(options)
        return [pool.pop(self.below(len(pool))) for _ in range(min(count, len(pool)))]


def _fill_pattern(text: str, draws: _Draws) -> str:
    """Replace "#" (a digit), "@" (a capital letter) and "{a-b}" (an integer from a to b)."""
    if "{" not in text and "#" not in text and "@" not in text:
        return text  # most words are plain, and this test is much cheaper than a regex search

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "#":
            return str(draws.below(10))
        if token == "@":
            return draws.choice(_UPPERCASE)
        low, high = int(match.group(1)), int(match.group(2))
        return str(low + draws.below(high - low + 1))

    return _PATTERN_PART.sub(replace, text)


def _category_counts(rows: int) -> list[int]:
    """Rows per category, proportional to weight (largest remainder), so sizes are exact."""
    total_weight = sum(category.weight for category in CATALOGUE)
    shares = [rows * category.weight / total_weight for category in CATALOGUE]
    counts = [int(share) for share in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - shares[i], i))
    for index in by_remainder[: rows - sum(counts)]:
        counts[index] += 1
    return counts


def _nouns(category: Category, language: str) -> tuple[str, ...]:
    return category.nouns_es if language == SPANISH else category.nouns_pt


def _title_segments(category: Category, language: str, draws: _Draws) -> list[str]:
    """The phrases of one title, in a typical seller's order, before any noise."""
    generic = GENERIC_WORDS[language]

    product = ""
    if category.lines and draws.chance(0.8):
        brand, _, model = _fill_pattern(draws.choice(category.lines), draws).partition(":")
        if model and draws.chance(0.75):
            product = model if draws.chance(0.12) else f"{brand} {model}"
        else:
            product = brand

    prefix = [draws.choice(generic)] if draws.chance(0.12) else []
    what: list[str] = []  # what the product is: "funda", "funda para celular"
    # Only a title that names a brand or model may leave out what the product is.
    if not (product and draws.chance(NO_NOUN_SHARE)):
        what.append(draws.choice(_nouns(category, language)))
    if category.accessory_for and draws.chance(ACCESSORY_FOR_SHARE):
        fitted = draws.choice(_nouns(_CATEGORY_BY_NAME[category.accessory_for], language))
        what.append(f"{FOR_WORD[language]} {fitted}")

    words = category.words_es if language == SPANISH else category.words_pt
    tail = [_fill_pattern(word, draws) for word in draws.distinct(words, draws.below(4))]
    specs = draws.distinct(category.specs, draws.choice((0, 1, 1, 2)))
    tail += [_fill_pattern(spec, draws) for spec in specs]
    if category.colored and draws.chance(0.35):
        tail.append(draws.choice(COLORS[language]))
    if category.bundles and draws.chance(BUNDLE_SHARE):
        other = _CATEGORY_BY_NAME[draws.choice(category.bundles)]
        bundled = draws.choice(_nouns(other, language))
        tail.append(draws.choice(BUNDLE_FORMS[language]).format(bundled))
    if draws.chance(0.25):
        tail.append(draws.choice(generic))
    if len(tail) > 1 and draws.chance(0.3):
        # Sellers do not agree on an order; one swap is enough to break fixed positions.
        i, j = draws.below(len(tail)), draws.below(len(tail))
        tail[i], tail[j] = tail[j], tail[i]

    named = [product] if product else []
    if named and what and draws.chance(0.15):
        segments = [*prefix, *named, *what, *tail]  # "Samsung Galaxy A10 Celular Libre"
    else:
        segments = [*prefix, *what, *named, *tail]
    if len(" ".join(segments).split()) < 2:
        segments.append(_fill_pattern(draws.choice(category.specs), draws))
    return segments


def _fit_length(segments: list[str]) -> list[str]:
    """Drop trailing phrases, the least informative, until the title is short enough."""
    while len(segments) > 2 and (
        len(" ".join(segments)) > MAX_TITLE_CHARS
        or len(" ".join(segments).split()) > MAX_TITLE_WORDS
    ):
        segments.pop()
    return segments


def _join_segments(segments: list[str], draws: _Draws) -> str:
    """Join phrases the way sellers do: mostly spaces, sometimes dashes, commas, slashes, (...)."""
    punctuated = draws.chance(0.3)
    parts = [segments[0]]
    for segment in segments[1:]:
        if not punctuated or draws.chance(0.7) or segment[0] == "+":
            parts.append(" " + segment)
        elif draws.chance(0.15):
            parts.append(f" ({segment})")
        else:
            parts.append(draws.choice((" - ", ", ", " / ", " + ", " - ")) + segment)
    return "".join(parts)


def _typo(word: str, draws: _Draws) -> str:
    """Swap, drop or double one inner letter: the commonest slips of a fast typist."""
    position = 1 + draws.below(len(word) - 2)
    kind = draws.below(3)
    if kind == 0:
        return word[:position] + word[position + 1] + word[position] + word[position + 2 :]
    if kind == 1:
        return word[:position] + word[position + 1 :]
    return word[:position] + word[position] + word[position:]


def _add_noise(title: str, draws: _Draws) -> str:
    """Drop accents, add typos and pick a capitalization style, as real titles vary."""
    if draws.chance(ACCENTLESS_TITLE_SHARE):
        title = title.translate(_ACCENTS)
    words = title.split(" ")
    for index, word in enumerate(words):
        if not word.isascii() and draws.chance(ACCENTLESS_WORD_SHARE):
            words[index] = word.translate(_ACCENTS)
    if draws.chance(TYPO_SHARE):
        typeable = [index for index, word in enumerate(words) if len(word) >= 4 and word.isalpha()]
        if typeable:
            index = typeable[draws.below(len(typeable))]
            words[index] = _typo(words[index], draws)
    style = draws.uniform()
    if style < 0.45:  # Title Case, the commonest on MercadoLibre
        words = [word[:1].upper() + word[1:] for word in words]
    elif style < 0.72:  # as typed: a capital first letter, brands as written
        words[0] = words[0][:1].upper() + words[0][1:]
    elif style < 0.88:
        words = [word.lower() for word in words]
    else:
        words = [word.upper() for word in words]
    return " ".join(words)


def _cut_to_limit(title: str) -> str:
    """Cut a title that punctuation or a typo pushed past the limit, at a word boundary."""
    if len(title) <= MAX_TITLE_CHARS:
        return title
    cut = title[: MAX_TITLE_CHARS + 1].rsplit(" ", 1)[0].rstrip(" -,/+(")
    if cut.count("(") > cut.count(")"):
        cut = cut.rsplit("(", 1)[0].rstrip(" -,/+")
    return cut


def _make_title(category: Category, language: str, draws: _Draws) -> str:
    segments = _fit_length(_title_segments(category, language, draws))
    return _cut_to_limit(_add_noise(_join_segments(segments, draws), draws))


def _wrong_category(category: Category, draws: _Draws) -> str:
    """A label a careless seller might pick: usually a confusable category, else any other."""
    if category.confusable and draws.chance(0.85):
        return draws.choice(category.confusable)
    other = draws.below(len(CATALOGUE) - 1)
    return CATALOGUE[other if other < CATALOGUE.index(category) else other + 1].name


def _generate_columns(rows: int, seed: int) -> dict[str, list[str]]:
    """The table's columns, plus "true_category" (what each title really is) for tests."""
    rows = operator.index(rows)  # a TypeError for 2.5 or "10", rather than a puzzling failure
    if rows < 1:
        raise ValueError(f"rows must be a positive number of titles to generate, got {rows}")
    draws = _Draws(seed)
    category_of_row = [
        index for index, count in enumerate(_category_counts(rows)) for _ in range(count)
    ]
    # Shuffle by sorting on random keys: a permutation that depends only on the raw stream.
    keys = np.array([draws.uniform() for _ in range(rows)])
    order = np.argsort(keys, kind="stable").tolist()

    columns: dict[str, list[str]] = {name: [] for name in (*COLUMNS, "true_category")}
    for row in order:
        category = CATALOGUE[category_of_row[row]]
        language = PORTUGUESE if draws.chance(PORTUGUESE_SHARE) else SPANISH
        quality = UNRELIABLE if draws.chance(UNRELIABLE_SHARE) else RELIABLE
        label = category.name
        if quality == UNRELIABLE and draws.chance(WRONG_LABEL_SHARE):
            label = _wrong_category(category, draws)
        columns["title"].append(_make_title(category, language, draws))
        columns["category"].append(label)
        columns["language"].append(language)
        columns["label_quality"].append(quality)
        columns["true_category"].append(category.name)
    return columns


def generate(rows: int, seed: int) -> pa.Table:
    """Return `rows` synthetic titles as a table with string columns title, category, language,
    label_quality.

    The same `(rows, seed)` gives a byte-identical table everywhere; `seed` is any non-negative
    integer, and different seeds give different tables.
    """
    columns = _generate_columns(rows, seed)
    return pa.table({name: pa.array(columns[name], type=pa.string()) for name in COLUMNS})
